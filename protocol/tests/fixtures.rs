//! Checks against files written by the real nix 2.8.0 client
//! (`tests/fixtures/make-fixtures.sh`). The tests iterate over whatever the
//! script produced, so regenerating the fixtures (new key, new signatures)
//! needs no test changes.

use std::fs;
use std::path::{Path, PathBuf};

use larder_protocol::compression::{nar_url, parse_nar_file_name, Compression};
use larder_protocol::hash::Sha256Hash;
use larder_protocol::nar::NarParser;
use larder_protocol::narinfo::NarInfo;
use larder_protocol::signing::{PublicKey, SecretKey};

/// The closure in make-fixtures.sh has 9 paths; fewer means the fixtures
/// are broken, and the loops below would pass vacuously.
const MIN_PATHS: usize = 9;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// (file name stem, text) of every narinfo in one fixture cache, sorted.
fn narinfos(cache: &str) -> Vec<(String, String)> {
    let dir = fixtures().join(cache);
    let mut out: Vec<(String, String)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "narinfo"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            (stem, fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() >= MIN_PATHS, "only {} narinfos in {cache}", out.len());
    out
}

fn read_key(name: &str) -> String {
    fs::read_to_string(fixtures().join(name)).unwrap()
}

#[test]
fn every_narinfo_renders_back_byte_identically() {
    for cache in ["cache-none", "cache-xz"] {
        for (stem, text) in narinfos(cache) {
            let info = NarInfo::parse(&text).unwrap_or_else(|e| panic!("{cache}/{stem}: {e}"));
            assert_eq!(info.render(), text, "{cache}/{stem}");
            assert_eq!(info.store_path.hash().as_str(), stem);
            let expected = if cache == "cache-none" { Compression::None } else { Compression::Xz };
            assert_eq!(info.compression, expected);
        }
    }
}

#[test]
fn fixtures_cover_the_interesting_cases() {
    let infos: Vec<NarInfo> = narinfos("cache-none").iter().map(|(_, t)| NarInfo::parse(t).unwrap()).collect();
    assert!(infos.iter().any(|i| i.deriver.is_some()), "a built path");
    assert!(infos.iter().any(|i| i.references.contains(&i.store_path)), "a self-reference");
    assert!(infos.iter().any(|i| i.references.is_empty()), "no references");
    assert!(infos.iter().any(|i| i.references.len() > 2), "many references");
    let ca = |prefix: &str| infos.iter().any(|i| i.ca.as_deref().is_some_and(|c| c.starts_with(prefix)));
    assert!(ca("fixed:r:sha256:") && ca("text:sha256:"));
    assert!(infos.iter().any(|i| i.store_path.name().contains('+') && i.store_path.name().contains('?')), "punctuation in a name");
}

#[test]
fn keys_round_trip_in_nix_format() {
    let secret_text = read_key("fixture-1.secret");
    let public_text = read_key("fixture-1.public");
    let secret = SecretKey::parse(&secret_text).unwrap();
    let public = PublicKey::parse(&public_text).unwrap();
    assert_eq!(secret.name(), "fixture-1");
    assert_eq!(secret.to_nix_string(), secret_text.trim());
    assert_eq!(public.to_nix_string(), public_text.trim());
    assert_eq!(secret.public_key(), public);
    let restored = SecretKey::from_keypair_bytes("fixture-1", &secret.to_keypair_bytes()).unwrap();
    assert_eq!(restored.to_nix_string(), secret.to_nix_string());
}

#[test]
fn nix_signatures_verify_with_our_code() {
    let public = PublicKey::parse(&read_key("fixture-1.public")).unwrap();
    for cache in ["cache-none", "cache-xz"] {
        for (stem, text) in narinfos(cache) {
            let info = NarInfo::parse(&text).unwrap();
            assert_eq!(info.sigs.len(), 1, "{stem}");
            let sig = info.sigs[0].clone();
            assert!(public.verify(info.fingerprint().as_bytes(), &sig), "{cache}/{stem}");
            assert!(info.is_signed_by(&public));
            // Any change to a signed field breaks it.
            let mut tampered = info.clone();
            tampered.nar_size += 1;
            assert!(!tampered.is_signed_by(&public), "{stem}");
            let mut tampered = info.clone();
            tampered.references.clear();
            if !info.references.is_empty() {
                assert!(!tampered.is_signed_by(&public), "{stem}");
            }
        }
    }
}

#[test]
fn our_signatures_are_byte_identical_to_nix() {
    let secret = SecretKey::parse(&read_key("fixture-1.secret")).unwrap();
    for cache in ["cache-none", "cache-xz"] {
        for (stem, text) in narinfos(cache) {
            let info = NarInfo::parse(&text).unwrap();
            let ours = secret.sign(info.fingerprint().as_bytes());
            assert_eq!(ours, info.sigs[0], "{cache}/{stem}");
            let mut resigned = info.clone();
            resigned.sign(&secret);
            assert_eq!(resigned, info, "sign() replaces the same-named sig");
        }
    }
}

#[test]
fn compressed_and_uncompressed_narinfos_agree() {
    let none = narinfos("cache-none");
    let xz = narinfos("cache-xz");
    assert_eq!(none.len(), xz.len());
    for ((stem, a), (_, b)) in none.iter().zip(&xz) {
        let a = NarInfo::parse(a).unwrap();
        let b = NarInfo::parse(b).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint(), "{stem}");
        assert_eq!(a.sigs, b.sigs, "compression is not signed");
        for info in [&a, &b] {
            let file_hash = info.file_hash.unwrap();
            assert_eq!(nar_url(&file_hash, info.compression), info.url);
            let (parsed, ext) = parse_nar_file_name(info.url.strip_prefix("nar/").unwrap()).unwrap();
            assert_eq!(parsed, file_hash);
            assert_eq!(ext, info.compression.extension());
        }
    }
}

#[test]
fn nar_parser_reproduces_hash_size_and_listing() {
    let dir = fixtures().join("cache-none");
    for (stem, text) in narinfos("cache-none") {
        let info = NarInfo::parse(&text).unwrap();
        let nar = fs::read(dir.join(&info.url)).unwrap();
        // compression=none: the file is the NAR itself.
        assert_eq!(Some(Sha256Hash::digest(&nar)), info.file_hash, "{stem}");
        assert_eq!(Some(nar.len() as u64), info.file_size, "{stem}");

        let mut parser = NarParser::new();
        parser.feed(&nar).unwrap_or_else(|e| panic!("{stem}: {e}"));
        let summary = parser.finish().unwrap();
        assert_eq!(summary.nar_hash, info.nar_hash, "{stem}");
        assert_eq!(summary.nar_size, info.nar_size, "{stem}");
        let ls = fs::read(dir.join(format!("{stem}.ls"))).unwrap();
        assert_eq!(String::from_utf8_lossy(summary.listing.as_deref().unwrap_or_default()), String::from_utf8_lossy(&ls), "{stem}");
        assert_eq!(summary.listing.as_deref(), Some(&ls[..]), "{stem}");

        let mut bytewise = NarParser::new();
        for b in &nar {
            bytewise.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(bytewise.finish().unwrap(), summary, "{stem}");
    }
}

#[test]
fn damaged_fixture_nars_are_rejected() {
    let dir = fixtures().join("cache-none");
    for (stem, text) in narinfos("cache-none") {
        let info = NarInfo::parse(&text).unwrap();
        let nar = fs::read(dir.join(&info.url)).unwrap();
        let mut truncated = NarParser::new();
        truncated.feed(&nar[..nar.len() - 1]).unwrap();
        assert!(truncated.finish().is_err(), "{stem}");
        let mut trailing = NarParser::new();
        let mut longer = nar.clone();
        longer.extend_from_slice(&[0; 8]);
        assert!(trailing.feed(&longer).is_err(), "{stem}");
    }
}
