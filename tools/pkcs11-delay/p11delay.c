/*
 * p11delay: a PKCS#11 forwarding module that emulates a network HSM.
 *
 * It loads the real module named by P11DELAY_MODULE (default: SoftHSM2), hands out a copy
 * of that module's function list, and replaces the cryptographic entry points with
 * wrappers that sleep P11DELAY_US microseconds before forwarding. The sleep happens
 * outside the real module, so calls on different sessions overlap, as round trips to a
 * network HSM do.
 *
 * Fault injection (for tests of recovery paths):
 *   P11DELAY_FAIL_AT=<n>   the n-th cryptographic call (1-based) returns P11DELAY_FAIL_RV
 *                          instead of being forwarded;
 *   P11DELAY_FAIL_COUNT=<k> ... and so do the k-1 calls after it (default 1);
 *   P11DELAY_FAIL_RV=<ckr> the CKR code to return (decimal or 0x hex; default
 *                          CKR_DEVICE_ERROR, 0x30). CKR_TOKEN_NOT_PRESENT (0xE0) makes the
 *                          token "disappear" for those calls.
 *
 * Built by tools/pkcs11-delay/build.sh. Only standard C and libdl.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST shim;
static void *real_lib;
static unsigned long delay_us;
static unsigned long fail_at;
static unsigned long fail_count = 1;
static CK_RV fail_rv = CKR_DEVICE_ERROR;
static atomic_ulong crypto_calls;

static unsigned long env_ulong(const char *name, unsigned long fallback)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        return fallback;
    char *end = NULL;
    unsigned long n = strtoul(v, &end, 0);
    return (end != NULL && *end == '\0') ? n : fallback;
}

/* Counts the call, sleeps, and says whether this call must fail (returns its CKR). */
static CK_RV network_hop(void)
{
    unsigned long n = atomic_fetch_add(&crypto_calls, 1) + 1;
    if (delay_us > 0) {
        struct timespec ts = { (time_t)(delay_us / 1000000), (long)(delay_us % 1000000) * 1000 };
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
        }
    }
    if (fail_at > 0 && n >= fail_at && n < fail_at + fail_count)
        return fail_rv;
    return CKR_OK;
}

#define HOP()                        \
    do {                             \
        CK_RV hop_rv = network_hop(); \
        if (hop_rv != CKR_OK)        \
            return hop_rv;           \
    } while (0)

static CK_RV d_EncryptInit(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{ HOP(); return real->C_EncryptInit(s, m, k); }
static CK_RV d_Encrypt(CK_SESSION_HANDLE s, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR o, CK_ULONG_PTR ol)
{ HOP(); return real->C_Encrypt(s, d, dl, o, ol); }
static CK_RV d_EncryptUpdate(CK_SESSION_HANDLE s, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR o, CK_ULONG_PTR ol)
{ HOP(); return real->C_EncryptUpdate(s, d, dl, o, ol); }
static CK_RV d_EncryptFinal(CK_SESSION_HANDLE s, CK_BYTE_PTR o, CK_ULONG_PTR ol)
{ HOP(); return real->C_EncryptFinal(s, o, ol); }
static CK_RV d_DecryptInit(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{ HOP(); return real->C_DecryptInit(s, m, k); }
static CK_RV d_Decrypt(CK_SESSION_HANDLE s, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR o, CK_ULONG_PTR ol)
{ HOP(); return real->C_Decrypt(s, d, dl, o, ol); }
static CK_RV d_DecryptUpdate(CK_SESSION_HANDLE s, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR o, CK_ULONG_PTR ol)
{ HOP(); return real->C_DecryptUpdate(s, d, dl, o, ol); }
static CK_RV d_DecryptFinal(CK_SESSION_HANDLE s, CK_BYTE_PTR o, CK_ULONG_PTR ol)
{ HOP(); return real->C_DecryptFinal(s, o, ol); }
static CK_RV d_SignInit(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{ HOP(); return real->C_SignInit(s, m, k); }
static CK_RV d_Sign(CK_SESSION_HANDLE s, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR o, CK_ULONG_PTR ol)
{ HOP(); return real->C_Sign(s, d, dl, o, ol); }
static CK_RV d_SignUpdate(CK_SESSION_HANDLE s, CK_BYTE_PTR d, CK_ULONG dl)
{ HOP(); return real->C_SignUpdate(s, d, dl); }
static CK_RV d_SignFinal(CK_SESSION_HANDLE s, CK_BYTE_PTR o, CK_ULONG_PTR ol)
{ HOP(); return real->C_SignFinal(s, o, ol); }
static CK_RV d_VerifyInit(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{ HOP(); return real->C_VerifyInit(s, m, k); }
static CK_RV d_Verify(CK_SESSION_HANDLE s, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR sig, CK_ULONG sl)
{ HOP(); return real->C_Verify(s, d, dl, sig, sl); }
static CK_RV d_VerifyUpdate(CK_SESSION_HANDLE s, CK_BYTE_PTR d, CK_ULONG dl)
{ HOP(); return real->C_VerifyUpdate(s, d, dl); }
static CK_RV d_VerifyFinal(CK_SESSION_HANDLE s, CK_BYTE_PTR sig, CK_ULONG sl)
{ HOP(); return real->C_VerifyFinal(s, sig, sl); }
static CK_RV d_GenerateKey(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k)
{ HOP(); return real->C_GenerateKey(s, m, t, n, k); }
static CK_RV d_GenerateKeyPair(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pt, CK_ULONG pn,
                               CK_ATTRIBUTE_PTR vt, CK_ULONG vn, CK_OBJECT_HANDLE_PTR pk, CK_OBJECT_HANDLE_PTR vk)
{ HOP(); return real->C_GenerateKeyPair(s, m, pt, pn, vt, vn, pk, vk); }
static CK_RV d_WrapKey(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE w, CK_OBJECT_HANDLE k,
                       CK_BYTE_PTR o, CK_ULONG_PTR ol)
{ HOP(); return real->C_WrapKey(s, m, w, k, o, ol); }
static CK_RV d_UnwrapKey(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE u, CK_BYTE_PTR w, CK_ULONG wl,
                         CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR k)
{ HOP(); return real->C_UnwrapKey(s, m, u, w, wl, t, n, k); }
static CK_RV d_DeriveKey(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR t, CK_ULONG n,
                         CK_OBJECT_HANDLE_PTR k)
{ HOP(); return real->C_DeriveKey(s, m, b, t, n, k); }
static CK_RV d_GenerateRandom(CK_SESSION_HANDLE s, CK_BYTE_PTR o, CK_ULONG ol)
{ HOP(); return real->C_GenerateRandom(s, o, ol); }

static CK_RV load_real(void)
{
    if (real != NULL)
        return CKR_OK;
    const char *path = getenv("P11DELAY_MODULE");
    if (path == NULL || *path == '\0')
        path = "/usr/lib/softhsm/libsofthsm2.so";
    real_lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (real_lib == NULL) {
        fprintf(stderr, "p11delay: cannot load %s: %s\n", path, dlerror());
        return CKR_GENERAL_ERROR;
    }
    CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(real_lib, "C_GetFunctionList");
    CK_FUNCTION_LIST *list = NULL;
    if (get == NULL || get(&list) != CKR_OK || list == NULL) {
        fprintf(stderr, "p11delay: %s has no usable C_GetFunctionList\n", path);
        return CKR_GENERAL_ERROR;
    }
    delay_us = env_ulong("P11DELAY_US", 0);
    fail_at = env_ulong("P11DELAY_FAIL_AT", 0);
    fail_count = env_ulong("P11DELAY_FAIL_COUNT", 1);
    fail_rv = (CK_RV)env_ulong("P11DELAY_FAIL_RV", CKR_DEVICE_ERROR);

    shim = *list;
    shim.C_EncryptInit = d_EncryptInit;
    shim.C_Encrypt = d_Encrypt;
    shim.C_EncryptUpdate = d_EncryptUpdate;
    shim.C_EncryptFinal = d_EncryptFinal;
    shim.C_DecryptInit = d_DecryptInit;
    shim.C_Decrypt = d_Decrypt;
    shim.C_DecryptUpdate = d_DecryptUpdate;
    shim.C_DecryptFinal = d_DecryptFinal;
    shim.C_SignInit = d_SignInit;
    shim.C_Sign = d_Sign;
    shim.C_SignUpdate = d_SignUpdate;
    shim.C_SignFinal = d_SignFinal;
    shim.C_VerifyInit = d_VerifyInit;
    shim.C_Verify = d_Verify;
    shim.C_VerifyUpdate = d_VerifyUpdate;
    shim.C_VerifyFinal = d_VerifyFinal;
    shim.C_GenerateKey = d_GenerateKey;
    shim.C_GenerateKeyPair = d_GenerateKeyPair;
    shim.C_WrapKey = d_WrapKey;
    shim.C_UnwrapKey = d_UnwrapKey;
    shim.C_DeriveKey = d_DeriveKey;
    shim.C_GenerateRandom = d_GenerateRandom;
    real = list;
    return CKR_OK;
}

/* The only export: every other entry point is reached through the returned list. A
 * PKCS#11 3.0 caller that looks for C_GetInterface falls back to this one. */
__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
    if (out == NULL)
        return CKR_ARGUMENTS_BAD;
    CK_RV rv = load_real();
    if (rv != CKR_OK)
        return rv;
    *out = &shim;
    return CKR_OK;
}
