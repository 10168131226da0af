//! Parser strictness and rendering, on the doc's examples and hand-made
//! variants. Real nix output is covered by `tests/fixtures.rs`.

use super::*;

/// Doc §2.1: an input-addressed path, as written by nix 2.8.0.
const BUILT: &str = "StorePath: /nix/store/jqniddrf544p2ns60is3lj2l6142fydx-built
URL: nar/1hb9z2rpdsfi0p5r6pginj3cbxlfdsld0pvsnid7iav4bqvj1wvl.nar.zst
Compression: zstd
FileHash: sha256:1hb9z2rpdsfi0p5r6pginj3cbxlfdsld0pvsnid7iav4bqvj1wvl
FileSize: 127
NarHash: sha256:1c04lbl57s42vy1qw56pqw89y6bhk0k2qfcxwhyd8f2shqalwmmp
NarSize: 160
References: bn2s3cd5z38a67jmwb8iglib1rc13l26-top
Deriver: 5q9linl7iixd6k42a383c55higbjy94p-built.drv
Sig: test-cache-1:fje9vNC/a+SZaBMJSVwzNy4uEFglfhrBePoVjjpMrnW0ocOsmqnmRweCWXQpwxQbbqu+GnXySTvn8lIr2RNEDg==
";

/// Doc §2.1: a content-addressed path with no references.
const PKG: &str = "StorePath: /nix/store/7isza30lf8nmh888vlbr001s5r63llif-pkg
URL: nar/1z8jm5vx16md8h08npdyzbmsaqm8dh79yn37b36n0317hscwcxy4.nar.zst
Compression: zstd
FileHash: sha256:1z8jm5vx16md8h08npdyzbmsaqm8dh79yn37b36n0317hscwcxy4
FileSize: 311
NarHash: sha256:1k6hksdlj97h120jbxwxhf5pqilpcnbsbrh0lyy441p3cy4kbyb8
NarSize: 1616
References: 
Sig: test-cache-1:ZPIz93PF7OA6TWh+RvRCk7QkgFaos3XiGN/npeKmqohk2ZHtX25jBW+j6jPE7SVqNWAlU3oWgnljAWm99DW+CQ==
CA: fixed:r:sha256:1k6hksdlj97h120jbxwxhf5pqilpcnbsbrh0lyy441p3cy4kbyb8
";

const MINIMAL: &str = "StorePath: /nix/store/7isza30lf8nmh888vlbr001s5r63llif-pkg
URL: nar/x.nar
NarHash: sha256:1k6hksdlj97h120jbxwxhf5pqilpcnbsbrh0lyy441p3cy4kbyb8
NarSize: 1616
";

fn err(text: &str) -> String {
    NarInfo::parse(text).unwrap_err().to_string()
}

#[test]
fn doc_examples_round_trip() {
    for text in [BUILT, PKG] {
        let info = NarInfo::parse(text).unwrap();
        assert_eq!(info.render(), text);
    }
    let built = NarInfo::parse(BUILT).unwrap();
    assert_eq!(built.compression, Compression::Zstd);
    assert_eq!(built.nar_size, 160);
    assert_eq!(built.file_size, Some(127));
    assert_eq!(built.deriver.unwrap().name(), "built.drv");
    assert_eq!(built.references.len(), 1);
    let pkg = NarInfo::parse(PKG).unwrap();
    assert!(pkg.references.is_empty());
    assert!(pkg.ca.unwrap().starts_with("fixed:r:sha256:"));
}

#[test]
fn doc_fingerprints() {
    assert_eq!(
        NarInfo::parse(BUILT).unwrap().fingerprint(),
        "1;/nix/store/jqniddrf544p2ns60is3lj2l6142fydx-built;sha256:1c04lbl57s42vy1qw56pqw89y6bhk0k2qfcxwhyd8f2shqalwmmp;160;/nix/store/bn2s3cd5z38a67jmwb8iglib1rc13l26-top"
    );
    assert_eq!(
        NarInfo::parse(PKG).unwrap().fingerprint(),
        "1;/nix/store/7isza30lf8nmh888vlbr001s5r63llif-pkg;sha256:1k6hksdlj97h120jbxwxhf5pqilpcnbsbrh0lyy441p3cy4kbyb8;1616;"
    );
    // The doc's third fingerprint, with references written unsorted.
    let top = "StorePath: /nix/store/bn2s3cd5z38a67jmwb8iglib1rc13l26-top
URL: nar/x.nar
NarHash: sha256:18v05g89s6hrdywkzxdizlsg7ivi0gzycfw3k9f4rvm72mhc2i8n
NarSize: 224
References: z45ailnkm27lnvhimqkhy08f6sh5m17d-hello.txt 7qgkh9av5vyzc82nfn2wgj25wch59h9w-refs
";
    assert_eq!(
        NarInfo::parse(top).unwrap().fingerprint(),
        "1;/nix/store/bn2s3cd5z38a67jmwb8iglib1rc13l26-top;sha256:18v05g89s6hrdywkzxdizlsg7ivi0gzycfw3k9f4rvm72mhc2i8n;224;/nix/store/7qgkh9av5vyzc82nfn2wgj25wch59h9w-refs,/nix/store/z45ailnkm27lnvhimqkhy08f6sh5m17d-hello.txt"
    );
}

#[test]
fn defaults_and_optional_fields() {
    let info = NarInfo::parse(MINIMAL).unwrap();
    assert_eq!(info.compression, Compression::Bzip2);
    assert_eq!(info.file_hash, None);
    assert_eq!(info.deriver, None);
    assert!(info.sigs.is_empty());
    // Written back with nix's always-present fields.
    assert_eq!(
        info.render(),
        "StorePath: /nix/store/7isza30lf8nmh888vlbr001s5r63llif-pkg
URL: nar/x.nar
Compression: bzip2
NarHash: sha256:1k6hksdlj97h120jbxwxhf5pqilpcnbsbrh0lyy441p3cy4kbyb8
NarSize: 1616
References: 
"
    );
    let empty_compression = format!("{MINIMAL}Compression: \n");
    assert_eq!(NarInfo::parse(&empty_compression).unwrap().compression, Compression::Bzip2);
    let unknown = format!("{MINIMAL}Deriver: unknown-deriver\nSystem: \nX-Unknown: whatever: x\n");
    let info = NarInfo::parse(&unknown).unwrap();
    assert_eq!(info.deriver, None);
    assert_eq!(info.system, None);
    let system = format!("{MINIMAL}System: x86_64-linux\n");
    let info = NarInfo::parse(&system).unwrap();
    assert_eq!(info.system.as_deref(), Some("x86_64-linux"));
    assert!(info.render().contains("\nSystem: x86_64-linux\n"));
}

#[test]
fn other_hash_forms_are_read_and_rewritten_as_nix32() {
    let hex = MINIMAL.replace("sha256:1k6hksdlj97h120jbxwxhf5pqilpcnbsbrh0lyy441p3cy4kbyb8", "sha256:68f93589dac..");
    assert!(NarInfo::parse(&hex).is_err());
    let canonical = NarInfo::parse(MINIMAL).unwrap();
    for form in [canonical.nar_hash.to_sri(), format!("sha256:{}", canonical.nar_hash.to_hex())] {
        let text = MINIMAL.replace(&canonical.nar_hash.to_typed_nix32(), &form);
        let info = NarInfo::parse(&text).unwrap();
        assert_eq!(info.nar_hash, canonical.nar_hash);
        assert_eq!(info.fingerprint(), canonical.fingerprint());
    }
    let bare = MINIMAL.replace("sha256:1k6h", "1k6h");
    assert!(err(&bare).starts_with("line 3: invalid NarHash"), "{}", err(&bare));
}

#[test]
fn strict_line_syntax() {
    assert_eq!(err(&PKG.replace('\n', "\r\n")), "line 1: carriage return found; lines must end with LF only");
    assert!(err(&MINIMAL.replace("NarSize: 1616\n", "NarSize: 1616\r\n")).starts_with("line 4:"));
    assert_eq!(err(MINIMAL.trim_end_matches('\n')), "the last line does not end with a newline");
    assert_eq!(err(&MINIMAL.replace("URL: nar", "URL:nar")), "line 2: expected 'Key: value'");
    assert_eq!(err(&MINIMAL.replace("URL: nar/x.nar\n", "URL nar/x.nar\n")), "line 2: expected 'Key: value'");
    assert_eq!(err(&MINIMAL.replace("URL: nar/x.nar\n", "URL: nar/x.nar\n\n")), "line 3: blank lines are not allowed");
    assert_eq!(err(&format!("\n{MINIMAL}")), "line 1: blank lines are not allowed");
    assert_eq!(err(&format!("{MINIMAL}: x\n")), "line 5: expected 'Key: value'");
    assert!(err(&MINIMAL.replace("NarSize: 1616", "NarSize:  1616")).starts_with("line 4: invalid NarSize"));
}

#[test]
fn required_fields() {
    assert_eq!(err(""), "missing field StorePath");
    let without = |key: &str| -> String { MINIMAL.lines().filter(|l| !l.starts_with(key)).map(|l| format!("{l}\n")).collect() };
    assert_eq!(err(&without("StorePath")), "missing field StorePath");
    assert_eq!(err(&without("URL")), "missing field URL");
    assert_eq!(err(&without("NarHash")), "missing field NarHash");
    assert_eq!(err(&without("NarSize")), "missing field NarSize");
    assert_eq!(err(&MINIMAL.replace("NarSize: 1616", "NarSize: 0")), "NarSize must be greater than 0");
    assert_eq!(err(&MINIMAL.replace("URL: nar/x.nar", "URL: ")), "line 2: invalid URL: must not be empty");
}

#[test]
fn invalid_values() {
    for (from, to, prefix) in [
        ("/nix/store/7isza30lf8nmh888vlbr001s5r63llif-pkg", "/nix/store/7isza30lf8nmh888vlbr001s5r63llie-pkg", "line 1: invalid StorePath"),
        ("/nix/store/7isza30lf8nmh888vlbr001s5r63llif-pkg", "/tmp/7isza30lf8nmh888vlbr001s5r63llif-pkg", "line 1: invalid StorePath"),
        (
            "/nix/store/7isza30lf8nmh888vlbr001s5r63llif-pkg",
            "/nix/store/7isza30lf8nmh888vlbr001s5r63llif-p kg",
            "line 1: invalid StorePath",
        ),
        ("NarSize: 1616", "NarSize: -1", "line 4: invalid NarSize"),
        ("NarSize: 1616", "NarSize: +1", "line 4: invalid NarSize"),
        ("NarSize: 1616", "NarSize: 99999999999999999999", "line 4: invalid NarSize"),
        ("NarSize: 1616", "NarSize: 1616 ", "line 4: invalid NarSize"),
    ] {
        let e = err(&MINIMAL.replace(from, to));
        assert!(e.starts_with(prefix), "{to}: {e}");
    }
    for (line, prefix) in [
        ("Compression: zip\n", "line 5: invalid Compression"),
        ("FileHash: md5:abc\n", "line 5: invalid FileHash"),
        ("FileSize: x\n", "line 5: invalid FileSize"),
        ("References: nothash-x\n", "line 5: invalid References"),
        ("Deriver: \n", "line 5: invalid Deriver"),
        ("Sig: nocolon\n", "line 5: invalid Sig"),
        ("Sig: k:c2hvcnQ=\n", "line 5: invalid Sig"),
        ("CA: fixed:r:sha256:zz\n", "line 5: invalid CA"),
        ("CA: nonsense\n", "line 5: invalid CA"),
        ("CA: text:sha1:1k6hksdlj97h120jbxwxhf5pqilpcnbsbrh0lyy441p3cy4kbyb8\n", "line 5: invalid CA"),
    ] {
        let e = err(&format!("{MINIMAL}{line}"));
        assert!(e.starts_with(prefix), "{line}: {e}");
    }
}

#[test]
fn duplicates() {
    let two_refs = format!("{MINIMAL}References: 7isza30lf8nmh888vlbr001s5r63llif-pkg\nReferences: 7isza30lf8nmh888vlbr001s5r63llif-pkg\n");
    assert!(err(&two_refs).starts_with("line 6: invalid References: given twice"));
    // An empty References line followed by one with content is fine (as in nix).
    let empty_then_full = format!("{MINIMAL}References: \nReferences: 7isza30lf8nmh888vlbr001s5r63llif-pkg\n");
    assert_eq!(NarInfo::parse(&empty_then_full).unwrap().references.len(), 1);
    let two_ca = format!(
        "{MINIMAL}CA: fixed:r:sha256:1k6hksdlj97h120jbxwxhf5pqilpcnbsbrh0lyy441p3cy4kbyb8\nCA: fixed:r:sha256:1k6hksdlj97h120jbxwxhf5pqilpcnbsbrh0lyy441p3cy4kbyb8\n"
    );
    assert_eq!(err(&two_ca), "line 6: duplicate field CA");
    assert_eq!(err(&format!("{MINIMAL}URL: nar/y.nar\n")), "line 5: duplicate field URL");
    assert_eq!(err(&format!("{MINIMAL}StorePath: /nix/store/7isza30lf8nmh888vlbr001s5r63llif-pkg\n")), "line 5: duplicate field StorePath");
}

#[test]
fn content_addresses() {
    for ok in [
        "fixed:r:sha256:1k6hksdlj97h120jbxwxhf5pqilpcnbsbrh0lyy441p3cy4kbyb8",
        "fixed:sha256:1k6hksdlj97h120jbxwxhf5pqilpcnbsbrh0lyy441p3cy4kbyb8",
        "text:sha256:0xi19450d11qavihdrawbhhd3nbifc4xwpqx4m9706v70llrsa7y",
        "fixed:sha1:0000000000000000000000000000000000000000",
        "fixed:r:md5:00000000000000000000000000",
        "fixed:sha512:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
    ] {
        assert_eq!(check_content_address(ok), Ok(()), "{ok}");
    }
    for bad in ["text:", "fixed:r:", "fixed:sha256", "fixed:sha256:", "fixed:r:sha3:00", "fixed:r:r:sha256:1k6h"] {
        assert!(check_content_address(bad).is_err(), "{bad}");
    }
}

#[test]
fn sign_and_verify() {
    let key = SecretKey::generate("larder-1").unwrap();
    let mut info = NarInfo::parse(PKG).unwrap();
    assert!(!info.is_signed_by(&key.public_key()));
    info.sign(&key);
    info.sign(&key);
    assert_eq!(info.sigs.len(), 2, "the test-cache-1 sig stays, ours is replaced");
    assert!(info.is_signed_by(&key.public_key()));
    // The signature survives a render/parse round trip.
    let again = NarInfo::parse(&info.render()).unwrap();
    assert!(again.is_signed_by(&key.public_key()));
    // And does not cover fields outside the fingerprint.
    let mut moved = again.clone();
    moved.url = "nar/elsewhere.nar.xz".into();
    moved.compression = Compression::Xz;
    assert!(moved.is_signed_by(&key.public_key()));
    moved.nar_size += 1;
    assert!(!moved.is_signed_by(&key.public_key()));
}

/// `n` distinct, valid store path base names.
fn references(n: usize) -> String {
    (0..n).map(|i| format!("{}-ref", nix32::encode(&Sha256Hash::digest(&i.to_le_bytes()).0[..20]))).collect::<Vec<_>>().join(" ")
}

#[test]
fn limits_on_size_references_and_signatures() {
    let with_refs = |n| MINIMAL.replace("NarSize: 1616\n", &format!("NarSize: 1616\nReferences: {}\n", references(n)));
    assert_eq!(NarInfo::parse(&with_refs(MAX_REFERENCES)).unwrap().references.len(), MAX_REFERENCES);
    assert_eq!(err(&with_refs(MAX_REFERENCES + 1)), "more than 10000 references");

    let sig = "Sig: test-cache-1:fje9vNC/a+SZaBMJSVwzNy4uEFglfhrBePoVjjpMrnW0ocOsmqnmRweCWXQpwxQbbqu+GnXySTvn8lIr2RNEDg==\n";
    let with_sigs = |n| format!("{MINIMAL}{}", sig.repeat(n));
    assert_eq!(NarInfo::parse(&with_sigs(MAX_SIGNATURES)).unwrap().sigs.len(), MAX_SIGNATURES);
    assert_eq!(err(&with_sigs(MAX_SIGNATURES + 1)), "more than 64 signatures");

    let padded = format!("{MINIMAL}X-Padding: {}\n", "a".repeat(MAX_NARINFO_SIZE));
    assert!(err(&padded).starts_with(&format!("narinfo is {} bytes", padded.len())));
}
