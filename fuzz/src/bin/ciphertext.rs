//! AFL++ harness: `p11kms::fuzzing::ciphertext`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        p11kms::fuzzing::ciphertext(data);
    });
}
