//! The wildcard matcher.

use super::*;

// --- matchers ------------------------------------------------------------------------------

#[test]
fn glob_matching() {
    use super::glob::matches;
    let cases = [
        ("", "", true),
        ("", "a", false),
        ("*", "", true),
        ("*", "anything", true),
        ("**", "", true),
        ("?", "", false),
        ("?", "a", true),
        ("?", "é", true),
        ("??", "é", false),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("a*c", "ac", true),
        ("a*c", "abbbc", true),
        ("a*c", "abbbd", false),
        ("*c", "abc", true),
        ("a*", "abc", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxcyyb", false),
        ("*a*", "bab", true),
        ("*ab", "aab", true),
        ("*aab", "aaab", true),
        ("a*?", "a", false),
        ("a*?", "ab", true),
        ("é*ü", "éxyzü", true),
        ("ABC", "abc", false),
        ("a*", "*", false),
        ("*", "*", true),
    ];
    for (pattern, text, expected) in cases {
        assert_eq!(matches(pattern, text), expected, "{pattern:?} vs {text:?}");
    }
}

#[test]
fn pathological_glob_finishes_fast() {
    use super::glob::matches;
    let text = "a".repeat(200_000);
    let start = Instant::now();
    assert!(!matches("a*a*a*a*a*b", &text));
    assert!(!matches("*a*a*a*a*a*a*a*a*a*a*b", &text));
    assert!(matches("a*a*a*a*a*b", &format!("{text}b")));
    assert!(matches("*a?a*a*", &text));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    // Through the whole engine too: a long action and resource against many stars.
    let doc = key_policy(
        r#"{"Effect":"Allow","Principal":"*","Action":"kms:a*a*a*a*a*a*a*b","Resource":"arn:a*a*a*a*a*a*b"}"#,
    );
    let action = format!("kms:{}", "a".repeat(50_000));
    let resource = format!("arn:{}", "a".repeat(50_000));
    let start = Instant::now();
    let e = evaluate_with(&doc, &action, &resource, ALICE, &ConditionValues::default());
    assert_eq!(e.allow, AllowMatch::None);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn cidr_parsing_and_containment() {
    use super::cidr::Cidr;
    use std::net::IpAddr;
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let net = |s: &str| Cidr::parse(s).unwrap_or_else(|| panic!("{s}"));
    assert!(net("192.0.2.0/24").contains(ip("192.0.2.255")));
    assert!(!net("192.0.2.0/24").contains(ip("192.0.3.0")));
    assert!(net("192.0.2.128/25").contains(ip("192.0.2.200")));
    assert!(!net("192.0.2.128/25").contains(ip("192.0.2.127")));
    assert!(net("0.0.0.0/0").contains(ip("255.255.255.255")));
    assert!(net("192.0.2.1").contains(ip("192.0.2.1")));
    assert!(!net("192.0.2.1/32").contains(ip("192.0.2.2")));
    assert!(net("::/0").contains(ip("ffff::1")));
    assert!(net("fe80::/10").contains(ip("febf::1")));
    assert!(!net("fe80::/10").contains(ip("fec0::1")));
    assert!(net("2001:db8::1/128").contains(ip("2001:db8::1")));
    assert!(!net("2001:db8::1/128").contains(ip("2001:db8::2")));
    assert!(net("::ffff:0:0/96").contains(ip("::ffff:1.2.3.4")));
    assert!(!net("::ffff:0:0/96").contains(ip("1.2.3.4")));
    assert_eq!(net("10.1.2.3/8"), net("10.0.0.0/8"));
    for bad in [
        "",
        "/",
        "10.0.0.0/",
        "/8",
        "10.0.0.0/33",
        "10.0.0.0/-1",
        "10.0.0.0/ 8",
        "10.0.0/8",
        "::/129",
        "::/0000",
        "1.2.3.4/8/8",
        "x",
    ] {
        assert!(Cidr::parse(bad).is_none(), "{bad:?}");
    }
}
