//! DNS cookies on a real `spdu run`, asked with dig: on by default (a server cookie for every
//! client cookie, BADCOOKIE for a bad server cookie over UDP), off with `[dns] cookies = false`.
//! Each test uses its own 127.0.N.0/24 block (191, 192).

use crate::testing::{dig, start_cluster};
use spdu_cluster::POOL_NAME;

/// The COOKIE option dig printed (hex, client and server cookie), if any.
fn printed_cookie(output: &str) -> Option<String> {
    let line = output.lines().find(|l| l.contains("COOKIE:"))?;
    let after = &line[line.find("COOKIE:")? + "COOKIE:".len()..];
    Some(after.split_whitespace().take_while(|w| w.chars().all(|c| c.is_ascii_hexdigit())).collect())
}

/// A cookie with a server part this site never made (version 1, stamped now, wrong hash).
fn forged_cookie() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as u32;
    format!("0123456789abcdef01000000{now:08x}0011223344556677")
}

#[tokio::test]
async fn cookies_are_on_by_default() {
    let mut cluster = start_cluster(1, 191, "").await;
    let server = cluster.dns_addr(0);
    let out = dig(server, &["+cookie", POOL_NAME, "A"]);
    assert!(out.contains("status: NOERROR"), "{out}");
    let cookie = printed_cookie(&out).unwrap_or_else(|| panic!("no COOKIE in the response: {out}"));
    assert_eq!(cookie.len(), 48, "client and RFC 9018 server cookie: {out}");
    assert_eq!(&cookie[16..24], "01000000", "version 1, reserved 0: {out}");
    assert!(out.contains("(good)"), "{out}");

    let again = dig(server, &[&format!("+cookie={cookie}"), POOL_NAME, "A"]);
    assert!(again.contains("status: NOERROR"), "the cookie it was given is accepted: {again}");

    let bad = dig(server, &[&format!("+cookie={}", forged_cookie()), "+nobadcookie", POOL_NAME, "A"]);
    assert!(bad.contains("status: BADCOOKIE"), "{bad}");
    let tcp = dig(server, &["+tcp", &format!("+cookie={}", forged_cookie()), "+nobadcookie", POOL_NAME, "A"]);
    assert!(tcp.contains("status: NOERROR"), "over TCP a bad cookie is answered: {tcp}");
    cluster.stop_all();
}

#[tokio::test]
async fn dns_cookies_false_turns_them_off() {
    let mut cluster = start_cluster(1, 192, "[dns]\ncookies = false\n").await;
    let server = cluster.dns_addr(0);
    let out = dig(server, &["+cookie", POOL_NAME, "A"]);
    assert!(out.contains("status: NOERROR"), "{out}");
    assert_eq!(printed_cookie(&out), None, "no COOKIE in the response: {out}");
    let bad = dig(server, &[&format!("+cookie={}", forged_cookie()), "+nobadcookie", POOL_NAME, "A"]);
    assert!(bad.contains("status: NOERROR"), "no cookie is checked: {bad}");
    cluster.stop_all();
}
