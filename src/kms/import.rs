//! GetParametersForImport, ImportKeyMaterial, DeleteImportedKeyMaterial.
//!
//! The gateway creates keys with origin `AWS_KMS` only (CreateKey refuses `EXTERNAL`), so these
//! operations find the key, authorize the caller and answer what AWS answers for such a key
//! (awsfact: TestKMS::test_get_parameters_for_import_raises_for_non_external_kms_keys /
//! get-import-parameters-error): `UnsupportedOperationException`,
//! `<key-arn> origin is AWS_KMS which is not valid for this operation.`

use crate::api::*;
use crate::error::KmsError;
use crate::model::KeyRecord;

use super::access::Access;
use super::{Caller, KmsService};

impl KmsService {
    pub fn get_parameters_for_import(
        &self,
        caller: &Caller,
        req: GetParametersForImportCommand,
    ) -> Result<GetParametersForImportResponse, KmsError> {
        let key =
            self.resolve_key_only(caller, &req.key_id, &Access::to("GetParametersForImport"))?;
        Err(self.origin_refusal(&key))
    }

    pub fn import_key_material(
        &self,
        caller: &Caller,
        req: ImportKeyMaterialCommand,
    ) -> Result<ImportKeyMaterialResponse, KmsError> {
        let key = self.resolve_key_only(caller, &req.key_id, &Access::to("ImportKeyMaterial"))?;
        Err(self.origin_refusal(&key))
    }

    pub fn delete_imported_key_material(
        &self,
        caller: &Caller,
        req: DeleteImportedKeyMaterialCommand,
    ) -> Result<DeleteImportedKeyMaterialResponse, KmsError> {
        let key = self.resolve_key_only(
            caller,
            &req.key_id,
            &Access::to("DeleteImportedKeyMaterial"),
        )?;
        Err(self.origin_refusal(&key))
    }

    /// AWS's answer for an import-family operation on a key whose material is not imported.
    fn origin_refusal(&self, key: &KeyRecord) -> KmsError {
        KmsError::UnsupportedOperation(format!(
            "{} origin is {} which is not valid for this operation.",
            self.arn_of(key),
            key.origin
        ))
    }
}
