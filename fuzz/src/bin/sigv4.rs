//! AFL++ harness: `p11kms::fuzzing::sigv4`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        p11kms::fuzzing::sigv4(data);
    });
}
