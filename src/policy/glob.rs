//! Wildcard matching: `*` matches any run of characters (possibly empty), `?` exactly one.
//!
//! The iterative two-pointer algorithm backtracks only to the most recent `*`, so a match
//! costs at most `O(len(pattern) * len(text))` steps and usually linear time; patterns such
//! as `a*a*a*a*b` cannot make it exponential.

/// Whether the whole of `text` matches `pattern` (case-sensitive; callers fold case first
/// where the comparison is case-insensitive).
pub(super) fn matches(pattern: &str, text: &str) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        matches_units(pattern.as_bytes(), text.as_bytes(), b'*', b'?')
    } else {
        // `?` stands for one character, not one byte.
        let pattern: Vec<char> = pattern.chars().collect();
        let text: Vec<char> = text.chars().collect();
        matches_units(&pattern, &text, '*', '?')
    }
}

fn matches_units<T: Copy + PartialEq>(pattern: &[T], text: &[T], star: T, one: T) -> bool {
    let (mut p, mut t) = (0, 0);
    // The last `*` seen (its pattern index) and the text index it absorbs up to, exclusive.
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(&c) if c == star => {
                resume = Some((p, t));
                p += 1;
            }
            Some(&c) if c == one || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match resume {
                // Let the last `*` absorb one more character and retry from just after it.
                Some((star_at, absorbed)) => {
                    resume = Some((star_at, absorbed + 1));
                    p = star_at + 1;
                    t = absorbed + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == star)
}
