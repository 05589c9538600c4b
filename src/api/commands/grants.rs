//! Grants, key policies and imported key material.

use super::{
    command, enum_list, maybe_one_of, one_of, present, ExpirationModel, FromBody, GrantOperation,
    ImportType, WrappingAlgorithm, WrappingKeySpec,
};
use crate::api::blob::Blob;
use crate::api::decode;
use crate::api::shapes::*;
use crate::error::KmsError;

/// CreateGrant's operations: present (validation requires them) and each a grant operation.
/// An empty list is the core's refusal, after the grant tokens are checked.
fn grant_operations(value: Option<Vec<String>>) -> Result<Vec<GrantOperation>, KmsError> {
    present("operations")(enum_list(value, "operations")?)
}

command! {
    /// CreateGrant.
    CreateGrantCommand from CreateGrantRequest {
        key_id: String = present("keyId"),
        grantee_principal: String = present("granteePrincipal"),
        retiring_principal: Option<String>,
        operations: Vec<GrantOperation> = grant_operations,
        constraints: Option<GrantConstraints>,
        grant_tokens: Option<Vec<String>>,
        name: Option<String>,
        dry_run: Option<bool>,
    }
}

command! {
    /// ListGrants.
    ListGrantsCommand from ListGrantsRequest {
        limit: Option<i64>,
        marker: Option<String>,
        key_id: String = present("keyId"),
        grant_id: Option<String>,
        grantee_principal: Option<String>,
    }
}

command! {
    /// ListRetirableGrants.
    ListRetirableGrantsCommand from ListRetirableGrantsRequest {
        limit: Option<i64>,
        marker: Option<String>,
        retiring_principal: String = present("retiringPrincipal"),
    }
}

/// The grant a RetireGrant names.
#[derive(Debug)]
pub enum GrantToRetire {
    /// By its token (which wins when key and grant id are given too).
    Token(String),
    /// By its key and id.
    Id { key_id: String, grant_id: String },
}

/// RetireGrant.
#[derive(Debug)]
pub struct RetireGrantCommand {
    pub grant: GrantToRetire,
    pub dry_run: Option<bool>,
}

impl FromBody for RetireGrantCommand {
    fn from_body(body: &[u8]) -> Result<Self, KmsError> {
        let r: RetireGrantRequest = decode(body)?;
        let grant = match (r.grant_token, r.key_id, r.grant_id) {
            (Some(token), _, _) => GrantToRetire::Token(token),
            (None, Some(key_id), Some(grant_id)) => GrantToRetire::Id { key_id, grant_id },
            _ => {
                return Err(KmsError::Validation(
                    "Either GrantToken, or both KeyId and GrantId, must be specified.".into(),
                ))
            }
        };
        Ok(RetireGrantCommand {
            grant,
            dry_run: r.dry_run,
        })
    }
}

command! {
    /// RevokeGrant.
    RevokeGrantCommand from RevokeGrantRequest {
        key_id: String = present("keyId"),
        grant_id: String = present("grantId"),
        dry_run: Option<bool>,
    }
}

command! {
    /// GetKeyPolicy.
    GetKeyPolicyCommand from GetKeyPolicyRequest {
        key_id: String = present("keyId"),
        policy_name: Option<String>,
    }
}

command! {
    /// PutKeyPolicy.
    PutKeyPolicyCommand from PutKeyPolicyRequest {
        key_id: String = present("keyId"),
        policy_name: Option<String>,
        policy: String = present("policy"),
        bypass_policy_lockout_safety_check: Option<bool>,
    }
}

command! {
    /// ListKeyPolicies.
    ListKeyPoliciesCommand from ListKeyPoliciesRequest {
        key_id: String = present("keyId"),
        limit: Option<i64>,
        marker: Option<String>,
    }
}

command! {
    /// GetParametersForImport.
    GetParametersForImportCommand from GetParametersForImportRequest {
        key_id: String = present("keyId"),
        wrapping_algorithm: WrappingAlgorithm = one_of("wrappingAlgorithm"),
        wrapping_key_spec: WrappingKeySpec = one_of("wrappingKeySpec"),
    }
}

command! {
    /// ImportKeyMaterial.
    ImportKeyMaterialCommand from ImportKeyMaterialRequest {
        key_id: String = present("keyId"),
        import_token: Blob = present("importToken"),
        encrypted_key_material: Blob = present("encryptedKeyMaterial"),
        valid_to: Option<f64>,
        expiration_model: Option<ExpirationModel> = maybe_one_of("expirationModel"),
        import_type: Option<ImportType> = maybe_one_of("importType"),
        key_material_description: Option<String>,
        key_material_id: Option<String>,
    }
}

command! {
    /// DeleteImportedKeyMaterial.
    DeleteImportedKeyMaterialCommand from DeleteImportedKeyMaterialRequest {
        key_id: String = present("keyId"),
        key_material_id: Option<String>,
    }
}
