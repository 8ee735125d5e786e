//! The command line: key files and config errors, as an operator meets them.

use std::os::unix::fs::PermissionsExt;

use crate::testing::run_spdu;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn keygen_writes_a_private_key_and_prints_the_public_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    let path_str = path.to_str().unwrap();
    let out = run_spdu(&["keygen", "--out", path_str]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.trim().starts_with("ed25519:") && printed.lines().count() == 1, "{printed}");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    let again = run_spdu(&["pubkey", "--key", path_str]);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), printed);

    let overwrite = run_spdu(&["keygen", "--out", path_str]);
    assert!(!overwrite.status.success());
    assert!(stderr(&overwrite).contains("already exists"), "{}", stderr(&overwrite));
    assert_eq!(String::from_utf8(run_spdu(&["pubkey", "--key", path_str]).stdout).unwrap(), printed);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let readable = run_spdu(&["pubkey", "--key", path_str]);
    assert!(!readable.status.success());
    assert!(stderr(&readable).contains("node.key"), "{}", stderr(&readable));
}

#[test]
fn config_mistakes_are_named_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("node.key");
    let own = String::from_utf8(run_spdu(&["keygen", "--out", key.to_str().unwrap()]).stdout).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other_key = other_dir.path().join("other.key");
    let other =
        String::from_utf8(run_spdu(&["keygen", "--out", other_key.to_str().unwrap()]).stdout).unwrap();
    let base = |peers: &str, extra: &str| {
        format!(
            "[node]\nname = \"alpha\"\nkey = \"node.key\"\ngossip = \"127.0.9.1:17946\"\ndns = [\"127.0.9.1:15353\"]\n\
             control = \"127.0.9.1:17947\"\naddresses = [\"127.0.9.1\"]\n{extra}\n[zone]\norigin = \"pool.example.test\"\n\
             names = [\"api\"]\nttl = 5\nnameservers = [\"alpha.example.test\"]\n{peers}"
        )
    };
    let peer = |name: &str, key: &str| {
        format!("\n[[peers]]\nname = \"{name}\"\nkey = \"{}\"\ngossip = \"127.0.9.2:17946\"\n", key.trim())
    };
    let cases = [
        (base(&peer("beta", &other), ""), None),
        (base(&peer("beta", &other), "colour = \"blue\"\n"), Some("colour")),
        (base(&peer("beta", &own), ""), Some("own")),
        (base(&format!("{}{}", peer("beta", &other), peer("beta", &other)), ""), Some("peers[1]")),
        (base(&peer("beta", "ed25519:nonsense"), ""), Some("peers[0].key")),
        (base(&peer("beta", &other), "").replace("127.0.9.1:17946", "localhost-ish"), Some("node.gossip")),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = run_spdu(&["check", "--config", path.to_str().unwrap()]);
        match expected {
            None => assert!(out.status.success(), "case {i}: {}", stderr(&out)),
            Some(field) => {
                assert!(!out.status.success(), "case {i} was accepted:\n{text}");
                let err = stderr(&out);
                assert!(err.contains(field), "case {i}: error does not name {field:?}: {err}");
            }
        }
    }
}
