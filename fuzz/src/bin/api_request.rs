//! AFL++ harness: `p11kms::fuzzing::api_request`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        p11kms::fuzzing::api_request(data);
    });
}
