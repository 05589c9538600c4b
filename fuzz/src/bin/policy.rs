//! AFL++ harness: `p11kms::fuzzing::policy`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        p11kms::fuzzing::policy(data);
    });
}
