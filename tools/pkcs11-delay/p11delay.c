/*
 * p11delay: a PKCS#11 forwarding module that emulates a network HSM.
 *
 * It loads the real module named by P11DELAY_MODULE (default: SoftHSM2), hands out a copy
 * of that module's function list with every entry point replaced by a wrapper, and
 * forwards. The cryptographic entry points (every call on a session with
 * P11DELAY_EVERY_CALL=1) sleep P11DELAY_US microseconds first. The sleep
 * happens outside the real module, so calls on different sessions overlap, as round trips
 * to a network HSM do.
 *
 * Fault injection fixed at load time (environment):
 *   P11DELAY_FAIL_AT=<n>   the n-th cryptographic call (1-based) returns P11DELAY_FAIL_RV
 *                          instead of being forwarded;
 *   P11DELAY_FAIL_COUNT=<k> ... and so do the k-1 calls after it (default 1);
 *   P11DELAY_FAIL_RV=<ckr> the CKR code to return (decimal or 0x hex; default
 *                          CKR_DEVICE_ERROR, 0x30). CKR_TOKEN_NOT_PRESENT (0xE0) makes the
 *                          token "disappear" for those calls.
 *
 * Fault injection switched at run time: P11DELAY_CONTROL=<file>. The module looks at the
 * file's inode, size and modification time at most every 2 ms (on the calls it serves) and
 * re-reads it when they change, so a test switches a fault on or off by replacing the file
 * (write a new one, then rename it over the old: readers never see half a file). A missing
 * file means no fault. The file holds `key=value` words; `#` starts a comment:
 *
 *   fault=none|device_error|session_invalid|token_removed|hang|logout
 *   until_ms=<ms>     wall-clock end of the fault (CLOCK_REALTIME, ms since the epoch);
 *                     without it the fault lasts until the file changes
 *   rv=<ckr>          the CKR the fault returns (device_error and hang: CKR_DEVICE_ERROR,
 *                     token_removed: CKR_TOKEN_NOT_PRESENT; 0x32 is CKR_DEVICE_REMOVED)
 *   failures=<n>      device_error: only the first n calls fail, then the fault is over
 *   hang_ms=<ms>      hang: every call sleeps this long (default 5000) ...
 *   after_hang=forward|fail   ... and is then forwarded (default) or fails with rv
 *   every_ms=<ms>     session_invalid: invalidate again every <ms> while the fault lasts
 *
 * What each fault does to the calls that start while it lasts:
 *   device_error     every call on a session, and C_OpenSession, returns rv;
 *   session_invalid  the sessions open when the fault starts are closed in the real module
 *                    (their session objects go with them) and every later call on them
 *                    returns CKR_SESSION_HANDLE_INVALID; sessions opened later work. If that
 *                    closed the last session, the real module has logged out, as an HSM
 *                    that lost its sessions has;
 *   token_removed    like session_invalid at the start, then every call on a session,
 *                    C_OpenSession, C_GetTokenInfo, C_GetMechanism* and C_InitToken return
 *                    rv, C_GetSlotList(tokenPresent) lists no slot and C_GetSlotInfo clears
 *                    CKF_TOKEN_PRESENT, until the token is back;
 *   hang             every call on a session, and C_OpenSession, sleeps hang_ms first (the
 *                    whole time, even if the fault ends meanwhile, as a request lost on the
 *                    network waits for its timeout);
 *   logout           once, when read: the application is logged out of the token (C_Logout
 *                    on one live session, between calls: the calls inside the real module
 *                    finish first) while its sessions stay open, as an HSM that dropped its
 *                    login does. Private session objects die with the login.
 * C_Initialize, C_Finalize, C_GetInfo and C_CloseSession never fail by injection.
 *
 * Session handles: the module hands out handles of its own and maps them to the real
 * module's, so that a handle it invalidated stays invalid even after the real module
 * reuses the number. A call already inside the real module when its session is
 * invalidated runs to its end, but its caller gets the invalidation's CKR (the answer is
 * lost, as a network HSM's can be); the real session is closed once no call is inside it.
 * One slot is assumed: C_CloseAllSessions forgets every session.
 *
 * The module stays loaded once loaded (RTLD_NODELETE): a caller that unloads and loads it
 * again (cryptoki does on every reinitialisation) finds the fault, the call counter and
 * the session table as they were.
 *
 * Built by tools/pkcs11-delay/build.sh. Standard C11 plus POSIX (stat, nanosleep,
 * clock_gettime) and libdl.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST shim;
static void *real_lib;

/* === time === */

static uint64_t clock_ms(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_us(unsigned long us)
{
    struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* === faults fixed at load time (environment) === */

static unsigned long delay_us;
/* P11DELAY_EVERY_CALL=1: every call on a session is a round trip (C_DestroyObject,
 * C_FindObjects*, C_GetAttributeValue, ...), as on a network HSM; by default only the
 * cryptographic entry points are. */
static int every_call;
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

/* Counts a cryptographic call, sleeps, and says whether it must fail (returns its CKR). */
static CK_RV network_hop(void)
{
    unsigned long n = atomic_fetch_add(&crypto_calls, 1) + 1;
    if (delay_us > 0)
        sleep_us(delay_us);
    if (fail_at > 0 && n >= fail_at && n < fail_at + fail_count)
        return fail_rv;
    return CKR_OK;
}

/* === session handles === */

/* A handle given out is (generation << SLOT_BITS) | slot; the generation starts at 1, so a
 * handle is never CK_INVALID_HANDLE, and closing a slot bumps it, so an old handle never
 * names a new session. */
#define SLOT_BITS 12
#define SLOTS (1u << SLOT_BITS)

enum slot_state { SLOT_FREE, SLOT_CLAIMED, SLOT_LIVE, SLOT_DEAD };

struct session_slot {
    atomic_ulong generation;
    atomic_int state;
    atomic_ulong real_handle;
    /* Calls inside the real module on this session now. An invalidated session is closed
     * in the real module by whoever leaves it last, never under a call. */
    atomic_int busy;
    atomic_int real_closed;
    /* What calls on an invalidated session return, those in flight at the time too. */
    atomic_ulong dead_rv;
};

static struct session_slot sessions[SLOTS];
static atomic_uint next_slot;

static struct session_slot *slot_of(CK_SESSION_HANDLE handle)
{
    return &sessions[handle & (SLOTS - 1)];
}

static void close_real_once(struct session_slot *s)
{
    int open = 0;
    if (atomic_compare_exchange_strong(&s->real_closed, &open, 1))
        real->C_CloseSession(atomic_load(&s->real_handle));
}

/* Records a real session and returns the handle the caller gets, or 0 when full. */
static CK_SESSION_HANDLE remember_session(CK_SESSION_HANDLE real_handle)
{
    unsigned start = atomic_fetch_add(&next_slot, 1);
    for (unsigned i = 0; i < SLOTS; i++) {
        unsigned slot = (start + i) & (SLOTS - 1);
        struct session_slot *s = &sessions[slot];
        int expected = SLOT_FREE;
        if (!atomic_compare_exchange_strong(&s->state, &expected, SLOT_CLAIMED))
            continue;
        atomic_store(&s->real_handle, real_handle);
        atomic_store(&s->busy, 0);
        atomic_store(&s->real_closed, 0);
        atomic_store(&s->dead_rv, CKR_SESSION_HANDLE_INVALID);
        unsigned long generation = atomic_fetch_add(&s->generation, 1) + 1;
        atomic_store(&s->state, SLOT_LIVE);
        return ((CK_SESSION_HANDLE)generation << SLOT_BITS) | slot;
    }
    return CK_INVALID_HANDLE;
}

/* Calls on sessions inside the real module now, and a gate that holds new ones back
 * while a logout waits for those inside to finish: the HSM drops the login between calls,
 * not under one (SoftHSM2 answers a call whose objects a logout destroyed under it with
 * stray codes such as CKR_KEY_TYPE_INCONSISTENT). */
static atomic_int calls_inside;
static atomic_int gate_closed;

static void gate_enter(void)
{
    for (;;) {
        atomic_fetch_add(&calls_inside, 1);
        if (!atomic_load(&gate_closed))
            return;
        atomic_fetch_sub(&calls_inside, 1);
        sleep_us(100);
    }
}

static void gate_leave(void)
{
    atomic_fetch_sub(&calls_inside, 1);
}

/* Enters a call on a live handle: its real handle, and the session counted busy. */
static CK_RV enter_session(CK_SESSION_HANDLE handle, CK_SESSION_HANDLE *real_handle)
{
    struct session_slot *s = slot_of(handle);
    unsigned long generation = handle >> SLOT_BITS;
    if (atomic_load(&s->generation) != generation || atomic_load(&s->state) != SLOT_LIVE)
        return CKR_SESSION_HANDLE_INVALID;
    gate_enter();
    atomic_fetch_add(&s->busy, 1);
    if (atomic_load(&s->generation) != generation || atomic_load(&s->state) != SLOT_LIVE) {
        if (atomic_fetch_sub(&s->busy, 1) == 1 && atomic_load(&s->state) == SLOT_DEAD)
            close_real_once(s);
        gate_leave();
        return CKR_SESSION_HANDLE_INVALID;
    }
    *real_handle = atomic_load(&s->real_handle);
    return CKR_OK;
}

/* Leaves a call: the real module's answer, unless the session was invalidated meanwhile. */
static CK_RV leave_session(CK_SESSION_HANDLE handle, CK_RV rv)
{
    struct session_slot *s = slot_of(handle);
    gate_leave();
    int last = atomic_fetch_sub(&s->busy, 1) == 1;
    if (atomic_load(&s->state) != SLOT_DEAD)
        return rv;
    if (last)
        close_real_once(s);
    return (CK_RV)atomic_load(&s->dead_rv);
}

/* Closes a handle: the real session too if it is still open. */
static CK_RV close_session(CK_SESSION_HANDLE handle)
{
    struct session_slot *s = slot_of(handle);
    unsigned long generation = handle >> SLOT_BITS;
    int state = SLOT_LIVE;
    int was_live = atomic_compare_exchange_strong(&s->state, &state, SLOT_CLAIMED);
    if (!was_live) {
        state = SLOT_DEAD;
        if (!atomic_compare_exchange_strong(&s->state, &state, SLOT_CLAIMED))
            return CKR_SESSION_HANDLE_INVALID;
    }
    if (atomic_load(&s->generation) != generation) {
        atomic_store(&s->state, was_live ? SLOT_LIVE : SLOT_DEAD);
        return CKR_SESSION_HANDLE_INVALID;
    }
    atomic_fetch_add(&s->generation, 1);
    CK_RV rv = CKR_SESSION_HANDLE_INVALID;
    int open = 0;
    if (atomic_compare_exchange_strong(&s->real_closed, &open, 1)) {
        CK_RV closed = real->C_CloseSession(atomic_load(&s->real_handle));
        if (was_live)
            rv = closed;
    }
    atomic_store(&s->state, SLOT_FREE);
    return rv;
}

/* Invalidates every live session: later calls on it, and those in flight, return `rv`; the
 * real session is closed (with its session objects) once no call is inside it. */
static unsigned invalidate_sessions(CK_RV rv)
{
    unsigned invalidated = 0;
    for (unsigned slot = 0; slot < SLOTS; slot++) {
        struct session_slot *s = &sessions[slot];
        if (atomic_load(&s->state) != SLOT_LIVE)
            continue;
        atomic_store(&s->dead_rv, rv);
        int state = SLOT_LIVE;
        if (!atomic_compare_exchange_strong(&s->state, &state, SLOT_DEAD))
            continue;
        if (atomic_load(&s->busy) == 0)
            close_real_once(s);
        invalidated++;
    }
    return invalidated;
}

/* Logs the application out of the token through one live session; its sessions stay open.
 * Returns whether a session was there to do it. */
static unsigned log_out(void)
{
    unsigned done = 0;
    atomic_store(&gate_closed, 1);
    for (int waited = 0; waited < 10000 && atomic_load(&calls_inside) > 0; waited++)
        sleep_us(100);
    for (unsigned slot = 0; slot < SLOTS && !done; slot++) {
        struct session_slot *s = &sessions[slot];
        if (atomic_load(&s->state) != SLOT_LIVE)
            continue;
        CK_RV rv = real->C_Logout(atomic_load(&s->real_handle));
        done = rv == CKR_OK || rv == CKR_USER_NOT_LOGGED_IN;
    }
    atomic_store(&gate_closed, 0);
    return done;
}

/* After C_Finalize or C_CloseAllSessions: the real module has no sessions any more. */
static void forget_sessions(void)
{
    for (unsigned slot = 0; slot < SLOTS; slot++) {
        struct session_slot *s = &sessions[slot];
        int state = atomic_load(&s->state);
        if (state == SLOT_LIVE || state == SLOT_DEAD) {
            if (atomic_compare_exchange_strong(&s->state, &state, SLOT_CLAIMED)) {
                atomic_fetch_add(&s->generation, 1);
                atomic_store(&s->state, SLOT_FREE);
            }
        }
    }
}

/* === faults switched at run time (control file) === */

enum fault_kind {
    FAULT_NONE,
    FAULT_DEVICE_ERROR,
    FAULT_SESSION_INVALID,
    FAULT_TOKEN_REMOVED,
    FAULT_HANG,
    FAULT_LOGOUT,
};

/* One reading of the control file. Published by pointer and never freed: a reader may
 * still hold the old one, and a test changes the file a few dozen times at most. */
struct fault {
    enum fault_kind kind;
    CK_RV rv;
    uint64_t until_ms;       /* CLOCK_REALTIME; 0 = until the file changes */
    long max_failures;       /* device_error; -1 = unlimited */
    atomic_long failures;
    unsigned long hang_ms;
    int fail_after_hang;
    unsigned long every_ms;  /* session_invalid */
    uint64_t next_invalidation_ms;
};

static _Atomic(struct fault *) active_fault;
static const char *control_path;
static atomic_ullong next_poll_ns;
static atomic_flag polling = ATOMIC_FLAG_INIT;
static struct stat control_seen; /* only touched while `polling` is held */
static int control_existed;

#define POLL_INTERVAL_NS 2000000u

static const char *fault_name(enum fault_kind kind)
{
    switch (kind) {
    case FAULT_DEVICE_ERROR: return "device_error";
    case FAULT_SESSION_INVALID: return "session_invalid";
    case FAULT_TOKEN_REMOVED: return "token_removed";
    case FAULT_HANG: return "hang";
    case FAULT_LOGOUT: return "logout";
    default: return "none";
    }
}

static void parse_control(struct fault *f, char *text)
{
    f->kind = FAULT_NONE;
    f->rv = 0;
    f->max_failures = -1;
    f->hang_ms = 5000;
    int rv_given = 0;
    char *lines = NULL;
    for (char *line = strtok_r(text, "\n", &lines); line != NULL; line = strtok_r(NULL, "\n", &lines)) {
        char *hash = strchr(line, '#');
        if (hash != NULL)
            *hash = '\0';
        char *save = NULL;
        for (char *word = strtok_r(line, " \t\r", &save); word != NULL;
             word = strtok_r(NULL, " \t\r", &save)) {
            char *eq = strchr(word, '=');
            if (eq == NULL) {
                fprintf(stderr, "p11delay: control file: ignored '%s'\n", word);
                continue;
            }
            *eq = '\0';
            const char *key = word, *val = eq + 1;
            unsigned long long n = strtoull(val, NULL, 0);
            if (strcmp(key, "fault") == 0) {
                if (strcmp(val, "device_error") == 0)
                    f->kind = FAULT_DEVICE_ERROR;
                else if (strcmp(val, "session_invalid") == 0)
                    f->kind = FAULT_SESSION_INVALID;
                else if (strcmp(val, "token_removed") == 0)
                    f->kind = FAULT_TOKEN_REMOVED;
                else if (strcmp(val, "hang") == 0)
                    f->kind = FAULT_HANG;
                else if (strcmp(val, "logout") == 0)
                    f->kind = FAULT_LOGOUT;
                else if (strcmp(val, "none") != 0)
                    fprintf(stderr, "p11delay: control file: unknown fault '%s'\n", val);
            } else if (strcmp(key, "until_ms") == 0) {
                f->until_ms = n;
            } else if (strcmp(key, "rv") == 0) {
                f->rv = (CK_RV)n;
                rv_given = 1;
            } else if (strcmp(key, "failures") == 0) {
                f->max_failures = (long)n;
            } else if (strcmp(key, "hang_ms") == 0) {
                f->hang_ms = (unsigned long)n;
            } else if (strcmp(key, "after_hang") == 0) {
                f->fail_after_hang = strcmp(val, "fail") == 0;
            } else if (strcmp(key, "every_ms") == 0) {
                f->every_ms = (unsigned long)n;
            } else {
                fprintf(stderr, "p11delay: control file: unknown key '%s'\n", key);
            }
        }
    }
    if (!rv_given)
        f->rv = f->kind == FAULT_TOKEN_REMOVED ? CKR_TOKEN_NOT_PRESENT : CKR_DEVICE_ERROR;
}

/* The fault in force now, or NULL. */
static struct fault *current_fault(void)
{
    struct fault *f = atomic_load(&active_fault);
    if (f == NULL || f->kind == FAULT_NONE)
        return NULL;
    if (f->until_ms != 0 && clock_ms(CLOCK_REALTIME) >= f->until_ms)
        return NULL;
    return f;
}

static void apply_control(const struct stat *st)
{
    struct fault *f = calloc(1, sizeof *f);
    if (f == NULL)
        return;
    char text[4096] = "";
    if (st != NULL) {
        FILE *file = fopen(control_path, "r");
        if (file != NULL) {
            size_t n = fread(text, 1, sizeof text - 1, file);
            text[n] = '\0';
            fclose(file);
        }
    }
    parse_control(f, text);
    uint64_t now = clock_ms(CLOCK_REALTIME);
    f->next_invalidation_ms = now + f->every_ms;
    atomic_store(&active_fault, f);
    unsigned closed = 0;
    int running = f->until_ms == 0 || now < f->until_ms;
    if (running && f->kind == FAULT_SESSION_INVALID)
        closed = invalidate_sessions(CKR_SESSION_HANDLE_INVALID);
    else if (running && f->kind == FAULT_TOKEN_REMOVED)
        closed = invalidate_sessions(f->rv);
    else if (running && f->kind == FAULT_LOGOUT)
        closed = log_out(); /* none open (as after a reload of this module): nothing to do */
    fprintf(stderr, "p11delay: fault=%s rv=0x%lx until_ms=%llu (%s); %u sessions affected\n",
            fault_name(f->kind), (unsigned long)f->rv, (unsigned long long)f->until_ms,
            running ? "in force" : "already over", closed);
}

/* Re-reads the control file when it changed; cheap when it did not. */
static void poll_control(void)
{
    if (control_path == NULL)
        return;
    uint64_t now = monotonic_ns();
    if (now < atomic_load(&next_poll_ns))
        return;
    if (atomic_flag_test_and_set(&polling))
        return;
    atomic_store(&next_poll_ns, now + POLL_INTERVAL_NS);
    struct stat st;
    if (stat(control_path, &st) == 0) {
        if (!control_existed || st.st_ino != control_seen.st_ino || st.st_dev != control_seen.st_dev
            || st.st_size != control_seen.st_size
            || st.st_mtim.tv_sec != control_seen.st_mtim.tv_sec
            || st.st_mtim.tv_nsec != control_seen.st_mtim.tv_nsec) {
            control_seen = st;
            control_existed = 1;
            apply_control(&st);
        }
    } else if (control_existed) {
        control_existed = 0;
        apply_control(NULL);
    }
    struct fault *f = current_fault();
    if (f != NULL && f->kind == FAULT_SESSION_INVALID && f->every_ms > 0) {
        uint64_t wall = clock_ms(CLOCK_REALTIME);
        if (wall >= f->next_invalidation_ms) {
            f->next_invalidation_ms = wall + f->every_ms;
            unsigned closed = invalidate_sessions(CKR_SESSION_HANDLE_INVALID);
            fprintf(stderr, "p11delay: session_invalid again; %u sessions invalidated\n", closed);
        }
    }
    atomic_flag_clear(&polling);
}

/* Whether the token is away now. */
static struct fault *token_away(void)
{
    poll_control();
    struct fault *f = current_fault();
    return (f != NULL && f->kind == FAULT_TOKEN_REMOVED) ? f : NULL;
}

/* The run-time fault's verdict on a call on a session (or C_OpenSession). */
static CK_RV fault_gate(void)
{
    poll_control();
    struct fault *f = current_fault();
    if (f == NULL)
        return CKR_OK;
    switch (f->kind) {
    case FAULT_TOKEN_REMOVED:
        return f->rv;
    case FAULT_DEVICE_ERROR:
        if (f->max_failures >= 0 && atomic_fetch_add(&f->failures, 1) >= f->max_failures)
            return CKR_OK;
        return f->rv;
    case FAULT_HANG:
        sleep_us(f->hang_ms * 1000u);
        return f->fail_after_hang ? f->rv : CKR_OK;
    default:
        return CKR_OK;
    }
}

/* Everything a call on a session goes through before the real module: the network hop
 * (cryptographic calls), the run-time fault, then the handle translation. */
static CK_RV enter(CK_SESSION_HANDLE handle, int cryptographic, CK_SESSION_HANDLE *real_handle)
{
    CK_RV rv;
    if ((cryptographic || every_call) && (rv = network_hop()) != CKR_OK)
        return rv;
    if ((rv = fault_gate()) != CKR_OK)
        return rv;
    return enter_session(handle, real_handle);
}

/* === the wrappers === */

/* A call on a session: `s` is the caller's handle, `r` the real one in ARGS. */
#define SESSION_CALL(name, cryptographic, PARAMS, ARGS)                  \
    static CK_RV d_##name PARAMS                                         \
    {                                                                    \
        CK_SESSION_HANDLE r = CK_INVALID_HANDLE;                         \
        CK_RV rv = enter(s, cryptographic, &r);                          \
        if (rv != CKR_OK)                                                \
            return rv;                                                   \
        rv = real->C_##name == NULL ? CKR_FUNCTION_NOT_SUPPORTED : real->C_##name ARGS; \
        return leave_session(s, rv);                                     \
    }

typedef CK_SESSION_HANDLE S;
typedef CK_BYTE_PTR B;
typedef CK_ULONG L;
typedef CK_ULONG_PTR LP;
typedef CK_MECHANISM_PTR M;
typedef CK_OBJECT_HANDLE O;
typedef CK_ATTRIBUTE_PTR A;

SESSION_CALL(InitPIN, 0, (S s, B p, L pl), (r, p, pl))
SESSION_CALL(SetPIN, 0, (S s, B o, L ol, B n, L nl), (r, o, ol, n, nl))
SESSION_CALL(GetSessionInfo, 0, (S s, CK_SESSION_INFO_PTR i), (r, i))
SESSION_CALL(GetOperationState, 0, (S s, B o, LP ol), (r, o, ol))
SESSION_CALL(SetOperationState, 0, (S s, B o, L ol, O e, O a), (r, o, ol, e, a))
SESSION_CALL(Login, 0, (S s, CK_USER_TYPE u, B p, L pl), (r, u, p, pl))
SESSION_CALL(Logout, 0, (S s), (r))
SESSION_CALL(CreateObject, 0, (S s, A t, L n, CK_OBJECT_HANDLE_PTR o), (r, t, n, o))
SESSION_CALL(CopyObject, 0, (S s, O o, A t, L n, CK_OBJECT_HANDLE_PTR c), (r, o, t, n, c))
SESSION_CALL(DestroyObject, 0, (S s, O o), (r, o))
SESSION_CALL(GetObjectSize, 0, (S s, O o, LP z), (r, o, z))
SESSION_CALL(GetAttributeValue, 0, (S s, O o, A t, L n), (r, o, t, n))
SESSION_CALL(SetAttributeValue, 0, (S s, O o, A t, L n), (r, o, t, n))
SESSION_CALL(FindObjectsInit, 0, (S s, A t, L n), (r, t, n))
SESSION_CALL(FindObjects, 0, (S s, CK_OBJECT_HANDLE_PTR o, L m, LP n), (r, o, m, n))
SESSION_CALL(FindObjectsFinal, 0, (S s), (r))
SESSION_CALL(EncryptInit, 1, (S s, M m, O k), (r, m, k))
SESSION_CALL(Encrypt, 1, (S s, B d, L dl, B o, LP ol), (r, d, dl, o, ol))
SESSION_CALL(EncryptUpdate, 1, (S s, B d, L dl, B o, LP ol), (r, d, dl, o, ol))
SESSION_CALL(EncryptFinal, 1, (S s, B o, LP ol), (r, o, ol))
SESSION_CALL(DecryptInit, 1, (S s, M m, O k), (r, m, k))
SESSION_CALL(Decrypt, 1, (S s, B d, L dl, B o, LP ol), (r, d, dl, o, ol))
SESSION_CALL(DecryptUpdate, 1, (S s, B d, L dl, B o, LP ol), (r, d, dl, o, ol))
SESSION_CALL(DecryptFinal, 1, (S s, B o, LP ol), (r, o, ol))
SESSION_CALL(DigestInit, 0, (S s, M m), (r, m))
SESSION_CALL(Digest, 0, (S s, B d, L dl, B o, LP ol), (r, d, dl, o, ol))
SESSION_CALL(DigestUpdate, 0, (S s, B d, L dl), (r, d, dl))
SESSION_CALL(DigestKey, 0, (S s, O k), (r, k))
SESSION_CALL(DigestFinal, 0, (S s, B o, LP ol), (r, o, ol))
SESSION_CALL(SignInit, 1, (S s, M m, O k), (r, m, k))
SESSION_CALL(Sign, 1, (S s, B d, L dl, B o, LP ol), (r, d, dl, o, ol))
SESSION_CALL(SignUpdate, 1, (S s, B d, L dl), (r, d, dl))
SESSION_CALL(SignFinal, 1, (S s, B o, LP ol), (r, o, ol))
SESSION_CALL(SignRecoverInit, 0, (S s, M m, O k), (r, m, k))
SESSION_CALL(SignRecover, 0, (S s, B d, L dl, B o, LP ol), (r, d, dl, o, ol))
SESSION_CALL(VerifyInit, 1, (S s, M m, O k), (r, m, k))
SESSION_CALL(Verify, 1, (S s, B d, L dl, B g, L gl), (r, d, dl, g, gl))
SESSION_CALL(VerifyUpdate, 1, (S s, B d, L dl), (r, d, dl))
SESSION_CALL(VerifyFinal, 1, (S s, B g, L gl), (r, g, gl))
SESSION_CALL(VerifyRecoverInit, 0, (S s, M m, O k), (r, m, k))
SESSION_CALL(VerifyRecover, 0, (S s, B g, L gl, B o, LP ol), (r, g, gl, o, ol))
SESSION_CALL(DigestEncryptUpdate, 0, (S s, B d, L dl, B o, LP ol), (r, d, dl, o, ol))
SESSION_CALL(DecryptDigestUpdate, 0, (S s, B d, L dl, B o, LP ol), (r, d, dl, o, ol))
SESSION_CALL(SignEncryptUpdate, 0, (S s, B d, L dl, B o, LP ol), (r, d, dl, o, ol))
SESSION_CALL(DecryptVerifyUpdate, 0, (S s, B d, L dl, B o, LP ol), (r, d, dl, o, ol))
SESSION_CALL(GenerateKey, 1, (S s, M m, A t, L n, CK_OBJECT_HANDLE_PTR k), (r, m, t, n, k))
SESSION_CALL(GenerateKeyPair, 1,
             (S s, M m, A pt, L pn, A vt, L vn, CK_OBJECT_HANDLE_PTR pk, CK_OBJECT_HANDLE_PTR vk),
             (r, m, pt, pn, vt, vn, pk, vk))
SESSION_CALL(WrapKey, 1, (S s, M m, O w, O k, B o, LP ol), (r, m, w, k, o, ol))
SESSION_CALL(UnwrapKey, 1, (S s, M m, O u, B w, L wl, A t, L n, CK_OBJECT_HANDLE_PTR k),
             (r, m, u, w, wl, t, n, k))
SESSION_CALL(DeriveKey, 1, (S s, M m, O b, A t, L n, CK_OBJECT_HANDLE_PTR k), (r, m, b, t, n, k))
SESSION_CALL(SeedRandom, 0, (S s, B d, L dl), (r, d, dl))
SESSION_CALL(GenerateRandom, 1, (S s, B o, L ol), (r, o, ol))
SESSION_CALL(GetFunctionStatus, 0, (S s), (r))
SESSION_CALL(CancelFunction, 0, (S s), (r))

static CK_RV d_Initialize(CK_VOID_PTR args)
{
    poll_control();
    return real->C_Initialize(args);
}

static CK_RV d_Finalize(CK_VOID_PTR reserved_arg)
{
    CK_RV rv = real->C_Finalize(reserved_arg);
    forget_sessions();
    return rv;
}

static CK_RV d_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR n)
{
    if (present && token_away() != NULL) {
        if (n == NULL)
            return CKR_ARGUMENTS_BAD;
        *n = 0;
        return CKR_OK;
    }
    return real->C_GetSlotList(present, list, n);
}

static CK_RV d_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info)
{
    CK_RV rv = real->C_GetSlotInfo(slot, info);
    if (rv == CKR_OK && info != NULL && token_away() != NULL)
        info->flags &= ~(CK_FLAGS)CKF_TOKEN_PRESENT;
    return rv;
}

static CK_RV d_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
    struct fault *away = token_away();
    return away != NULL ? away->rv : real->C_GetTokenInfo(slot, info);
}

static CK_RV d_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR n)
{
    struct fault *away = token_away();
    return away != NULL ? away->rv : real->C_GetMechanismList(slot, list, n);
}

static CK_RV d_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info)
{
    struct fault *away = token_away();
    return away != NULL ? away->rv : real->C_GetMechanismInfo(slot, type, info);
}

static CK_RV d_InitToken(CK_SLOT_ID slot, B pin, L pin_len, B label)
{
    struct fault *away = token_away();
    return away != NULL ? away->rv : real->C_InitToken(slot, pin, pin_len, label);
}

static CK_RV d_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                           CK_SESSION_HANDLE_PTR out)
{
    if (out == NULL)
        return CKR_ARGUMENTS_BAD;
    CK_RV rv = fault_gate();
    if (rv != CKR_OK)
        return rv;
    CK_SESSION_HANDLE real_handle = CK_INVALID_HANDLE;
    rv = real->C_OpenSession(slot, flags, app, notify, &real_handle);
    if (rv != CKR_OK)
        return rv;
    CK_SESSION_HANDLE handle = remember_session(real_handle);
    if (handle == CK_INVALID_HANDLE) {
        real->C_CloseSession(real_handle);
        return CKR_SESSION_COUNT;
    }
    *out = handle;
    return CKR_OK;
}

static CK_RV d_CloseSession(CK_SESSION_HANDLE s)
{
    poll_control();
    return close_session(s);
}

static CK_RV d_CloseAllSessions(CK_SLOT_ID slot)
{
    CK_RV rv = real->C_CloseAllSessions(slot);
    forget_sessions();
    return rv;
}

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out);

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
    every_call = env_ulong("P11DELAY_EVERY_CALL", 0) != 0;
    fail_at = env_ulong("P11DELAY_FAIL_AT", 0);
    fail_count = env_ulong("P11DELAY_FAIL_COUNT", 1);
    fail_rv = (CK_RV)env_ulong("P11DELAY_FAIL_RV", CKR_DEVICE_ERROR);
    const char *control = getenv("P11DELAY_CONTROL");
    control_path = (control != NULL && *control != '\0') ? control : NULL;
    /* Stay loaded when the caller unloads the module (cryptoki does on every
     * reinitialisation): the fault in force, its failure count and the session table
     * must outlive a reload, or a reinitialisation would restart a fault. */
    Dl_info self;
    if (dladdr((void *)C_GetFunctionList, &self) == 0 || self.dli_fname == NULL
        || dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE) == NULL)
        fprintf(stderr, "p11delay: cannot pin myself in memory; a reload resets the faults\n");

    shim = *list;
#define WRAP(name) shim.C_##name = d_##name
    WRAP(Initialize); WRAP(Finalize); WRAP(GetSlotList); WRAP(GetSlotInfo);
    WRAP(GetTokenInfo); WRAP(GetMechanismList); WRAP(GetMechanismInfo); WRAP(InitToken);
    WRAP(InitPIN); WRAP(SetPIN); WRAP(OpenSession); WRAP(CloseSession);
    WRAP(CloseAllSessions); WRAP(GetSessionInfo); WRAP(GetOperationState);
    WRAP(SetOperationState); WRAP(Login); WRAP(Logout); WRAP(CreateObject); WRAP(CopyObject);
    WRAP(DestroyObject); WRAP(GetObjectSize); WRAP(GetAttributeValue); WRAP(SetAttributeValue);
    WRAP(FindObjectsInit); WRAP(FindObjects); WRAP(FindObjectsFinal);
    WRAP(EncryptInit); WRAP(Encrypt); WRAP(EncryptUpdate); WRAP(EncryptFinal);
    WRAP(DecryptInit); WRAP(Decrypt); WRAP(DecryptUpdate); WRAP(DecryptFinal);
    WRAP(DigestInit); WRAP(Digest); WRAP(DigestUpdate); WRAP(DigestKey); WRAP(DigestFinal);
    WRAP(SignInit); WRAP(Sign); WRAP(SignUpdate); WRAP(SignFinal);
    WRAP(SignRecoverInit); WRAP(SignRecover);
    WRAP(VerifyInit); WRAP(Verify); WRAP(VerifyUpdate); WRAP(VerifyFinal);
    WRAP(VerifyRecoverInit); WRAP(VerifyRecover);
    WRAP(DigestEncryptUpdate); WRAP(DecryptDigestUpdate); WRAP(SignEncryptUpdate);
    WRAP(DecryptVerifyUpdate);
    WRAP(GenerateKey); WRAP(GenerateKeyPair); WRAP(WrapKey); WRAP(UnwrapKey); WRAP(DeriveKey);
    WRAP(SeedRandom); WRAP(GenerateRandom); WRAP(GetFunctionStatus); WRAP(CancelFunction);
#undef WRAP
    /* A caller that asks the list for the list gets this one, not the real module's. */
    shim.C_GetFunctionList = C_GetFunctionList;
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
