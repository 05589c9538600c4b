//! The Kryoptic software token as a PKCS#11 module (`libkryoptic_pkcs11.so`).
//!
//! `kryoptic-lib` implements the token; a PKCS#11 module must also export the entry points a
//! loader looks up with `dlsym`. They are exported here and hand over to the library's own
//! implementations. The configuration file is named by `KRYOPTIC_CONF` (p11kms writes it
//! under its data directory).

use kryoptic_lib::fns::general::{fn_get_function_list, fn_get_interface, fn_get_interface_list};
use kryoptic_lib::pkcs11::{
    CK_FLAGS, CK_FUNCTION_LIST_PTR_PTR, CK_INTERFACE_PTR, CK_INTERFACE_PTR_PTR, CK_RV,
    CK_ULONG_PTR, CK_UTF8CHAR_PTR, CK_VERSION_PTR,
};

/// PKCS#11 `C_GetFunctionList`: the table of every other entry point.
#[no_mangle]
pub extern "C" fn C_GetFunctionList(list: CK_FUNCTION_LIST_PTR_PTR) -> CK_RV {
    fn_get_function_list(list)
}

/// PKCS#11 3.0 `C_GetInterface`: one named interface (and version) of the module.
#[no_mangle]
pub extern "C" fn C_GetInterface(
    name: CK_UTF8CHAR_PTR,
    version: CK_VERSION_PTR,
    interface: CK_INTERFACE_PTR_PTR,
    flags: CK_FLAGS,
) -> CK_RV {
    fn_get_interface(name, version, interface, flags)
}

/// PKCS#11 3.0 `C_GetInterfaceList`: every interface the module offers.
#[no_mangle]
pub extern "C" fn C_GetInterfaceList(list: CK_INTERFACE_PTR, count: CK_ULONG_PTR) -> CK_RV {
    fn_get_interface_list(list, count)
}
