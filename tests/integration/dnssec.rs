//! DNSSEC: zone keys, `spdu ds` and `spdu check`, checked against knot's `keymgr` (which reads
//! the same PKCS#8 key file and computes the DNSKEY and DS itself).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::testing::run_spdu;

const ZONE: &str = "pool.example.test";

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `spdu dnssec-keygen`; returns the printed DNSKEY RDATA (`257 3 13 …`).
fn keygen(path: &Path, algorithm: &str) -> String {
    let line =
        stdout(&run_spdu(&["dnssec-keygen", "--out", path.to_str().unwrap(), "--algorithm", algorithm]));
    let rdata = line.trim().strip_prefix("@ 3600 IN DNSKEY ").unwrap_or_else(|| panic!("{line}"));
    assert!(rdata.starts_with(&format!("257 3 {algorithm} ")), "{line}");
    rdata.to_owned()
}

/// A node config at 127.0.206.x with `[dnssec]` (unless `dnssec` is empty) and one peer per
/// `(name, dnssec_key line)`.
fn config(dir: &Path, dnssec: &str, peers: &[(&str, &str)]) -> std::path::PathBuf {
    let node_key = dir.join("node.key");
    if !node_key.exists() {
        stdout(&run_spdu(&["keygen", "--out", node_key.to_str().unwrap()]));
    }
    let mut text = format!(
        "[node]\nname = \"alpha\"\nkey = \"node.key\"\ngossip = \"127.0.206.1:17946\"\n\
         dns = [\"127.0.206.1:15353\"]\ncontrol = \"127.0.206.1:17947\"\naddresses = [\"127.0.206.1\"]\n\
         [zone]\norigin = \"{ZONE}\"\nnames = [\"api\"]\nttl = 5\nnameservers = [\"ns1.example.test\"]\n{dnssec}\n"
    );
    for (i, (name, key_line)) in peers.iter().enumerate() {
        let peer_dir = tempfile::tempdir().unwrap();
        let peer_key = peer_dir.path().join("k");
        let public = stdout(&run_spdu(&["keygen", "--out", peer_key.to_str().unwrap()]));
        text.push_str(&format!(
            "[[peers]]\nname = \"{name}\"\nkey = \"{}\"\ngossip = \"127.0.206.{}:17946\"\n{key_line}\n",
            public.trim(),
            i + 2
        ));
    }
    let path = dir.join("spdu.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Imports `key_file` into a scratch knot KASP database; returns keymgr's DNSKEY and SHA-256 DS.
fn keymgr_truth(key_file: &Path, algorithm: &str) -> (String, String) {
    let kasp = tempfile::tempdir().unwrap();
    let keymgr = |args: &[&str]| {
        let out = Command::new("keymgr")
            .arg("-D")
            .arg(kasp.path())
            .arg(format!("{ZONE}."))
            .args(args)
            .output()
            .expect("keymgr (Debian package knot-dnssecutils) is installed");
        assert!(out.status.success(), "keymgr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let id = keymgr(&[
        "import-pem",
        key_file.to_str().unwrap(),
        &format!("algorithm={algorithm}"),
        "ksk=yes",
        "zsk=yes",
    ]);
    let id = id.lines().next().unwrap().trim().to_owned();
    let dnskey = keymgr(&["dnskey", &id]);
    let ds = keymgr(&["ds", &id]);
    let ds = ds.lines().find(|l| l.split_whitespace().nth(4) == Some("2")).unwrap().to_owned();
    (dnskey.trim().to_owned(), ds)
}

#[test]
fn keygen_writes_a_private_csk_and_keymgr_agrees_on_its_dnskey() {
    let dir = tempfile::tempdir().unwrap();
    for algorithm in ["13", "15"] {
        let path = dir.path().join(format!("zone{algorithm}.key"));
        let rdata = keygen(&path, algorithm);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (dnskey, _) = keymgr_truth(&path, algorithm);
        assert_eq!(dnskey, format!("{ZONE}. DNSKEY {rdata}"));

        let again = run_spdu(&["dnssec-keygen", "--out", path.to_str().unwrap()]);
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    }
    let with_zone = dir.path().join("zoned.key");
    let line = stdout(&run_spdu(&["dnssec-keygen", "--out", with_zone.to_str().unwrap(), "--zone", ZONE]));
    assert!(line.starts_with(&format!("{ZONE}. 3600 IN DNSKEY 257 3 13 ")), "{line}");
    let bad =
        run_spdu(&["dnssec-keygen", "--out", dir.path().join("x").to_str().unwrap(), "--algorithm", "14"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("only 13"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn ds_prints_every_sites_ds_as_keymgr_computes_it() {
    for algorithm in ["13", "15"] {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("zone.key");
        keygen(&own, algorithm);
        let peer_dir = tempfile::tempdir().unwrap();
        let (beta, gamma) = (peer_dir.path().join("beta.key"), peer_dir.path().join("gamma.key"));
        let beta_key = keygen(&beta, algorithm);
        let gamma_key = keygen(&gamma, algorithm);
        let path = config(
            dir.path(),
            "[dnssec]\nkey = \"zone.key\"\n",
            &[
                ("beta", &format!("dnssec_key = \"{beta_key}\"")),
                ("gamma", &format!("dnssec_key = \"{gamma_key}\"")),
            ],
        );
        let printed = stdout(&run_spdu(&["ds", "--config", path.to_str().unwrap()]));
        let expected: Vec<String> =
            [&own, &beta, &gamma].iter().map(|k| keymgr_truth(k, algorithm).1).collect();
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(lines.len(), 3, "{printed}");
        for (line, truth) in lines.iter().zip(&expected) {
            // keymgr: `zone. DS tag alg 2 hex`; ours adds the class, ready for a zone file.
            assert_eq!(line.to_ascii_lowercase(), truth.replacen(" DS ", " IN DS ", 1).to_ascii_lowercase());
        }
        let check = stdout(&run_spdu(&["check", "--config", path.to_str().unwrap()]));
        assert!(check.contains("dnssec: key tag") && check.contains("2 peer keys"), "{check}");
    }
}

#[test]
fn check_refuses_mixed_algorithms_and_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("zone.key");
    let own_key = keygen(&own, "13");
    let peer_dir = tempfile::tempdir().unwrap();
    let ecdsa = keygen(&peer_dir.path().join("e.key"), "13");
    let ed25519 = keygen(&peer_dir.path().join("d.key"), "15");
    let dnssec = "[dnssec]\nkey = \"zone.key\"\n";
    let line = |k: &str| format!("dnssec_key = \"{k}\"");
    let cases: Vec<(&str, Vec<(&str, String)>, &str)> = vec![
        (
            dnssec,
            vec![("beta", line(&ecdsa)), ("gamma", line(&ed25519))],
            "peers[1].dnssec_key: algorithm 15",
        ),
        (dnssec, vec![("beta", line(&ed25519))], "this node's dnssec.key is algorithm 13"),
        (dnssec, vec![("beta", line(&ecdsa)), ("gamma", String::new())], "peers[1].dnssec_key: missing"),
        ("", vec![("beta", line(&ecdsa))], "no [dnssec] section"),
        (dnssec, vec![("beta", line(&own_key))], "this node's own DNSKEY"),
        (dnssec, vec![("beta", line(&ecdsa)), ("gamma", line(&ecdsa))], "the same key as peers[0]"),
        (dnssec, vec![("beta", line("257 3 8 AwEAAQ=="))], "algorithm 8 is not supported"),
        (
            "[dnssec]\nkey = \"zone.key\"\nttl = 5\n",
            vec![("beta", line(&ecdsa))],
            "dnssec.ttl: 5 is out of bounds",
        ),
        ("[dnssec]\nkey = \"missing.key\"\n", vec![("beta", line(&ecdsa))], "dnssec.key"),
    ];
    for (i, (section, peers, expected)) in cases.iter().enumerate() {
        let peers: Vec<(&str, &str)> = peers.iter().map(|(n, l)| (*n, l.as_str())).collect();
        let path = config(dir.path(), section, &peers);
        let out = run_spdu(&["check", "--config", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} was accepted");
        assert!(err.contains(expected) && err.contains("spdu.toml"), "case {i}: {err}");
    }
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o640)).unwrap();
    let path = config(dir.path(), dnssec, &[("beta", &line(&ecdsa))]);
    let err = String::from_utf8(run_spdu(&["ds", "--config", path.to_str().unwrap()]).stderr).unwrap();
    assert!(err.contains("UNPROTECTED PRIVATE KEY FILE"), "{err}");
}
