//! AFL++ harness: `p11kms::fuzzing::seed`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        p11kms::fuzzing::seed(data);
    });
}
