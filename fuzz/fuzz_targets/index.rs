//! Mirror index parsing (`mirror::index`): `Index::open_unverified` and `Index::open` with a
//! fixed key set on arbitrary bytes, and on arbitrary index text inside an envelope correctly
//! signed with that key, so the checks behind the signature see hostile input too. Whatever
//! opens re-signs and opens to the same index.

#![no_main]

use ed25519_dalek::Signer as _;
use libfuzzer_sys::fuzz_target;
use subvol::mirror::Index;
use subvol::mirror::index::{DOMAIN, Envelope, INDEX_FORMAT};
use subvol::sign::{KeySet, SecretKey, hex_id};

fn key() -> SecretKey {
    SecretKey::from_seed(&[9; 32])
}

fn keys() -> KeySet {
    let mut k = KeySet::new();
    k.add(key().public().clone());
    k
}

fuzz_target!(|input: &[u8]| {
    // The input as an envelope.
    if let Ok(index) = Index::open_unverified(input) {
        check(&index);
    }
    if let Ok((index, _)) = Index::open(input, &keys()) {
        check(&index);
    }
    // The input as the signed index text.
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let mut msg = DOMAIN.to_vec();
    msg.extend_from_slice(text.as_bytes());
    let env = Envelope {
        format: INDEX_FORMAT.into(),
        key_id: key().public().id().to_string(),
        signature: hex_id(&key().signing_key().sign(&msg).to_bytes()),
        index: text.into(),
    };
    let bytes = serde_json::to_vec(&env).unwrap();
    let verified = Index::open(&bytes, &keys());
    let unverified = Index::open_unverified(&bytes);
    // The signature is good, so both ways agree on the content.
    match (verified, unverified) {
        (Ok((a, _)), Ok(b)) => {
            assert_eq!(a, b);
            check(&a);
        }
        (Err(_), Err(_)) => {}
        (v, u) => panic!("verified {:?} but unverified {:?}", v.is_ok(), u.is_ok()),
    }
});

/// Lookups on an accepted index, and a re-signed copy that opens to the same index.
fn check(index: &Index) {
    index.validate().unwrap();
    let _ = index.newest();
    for v in &index.versions {
        assert!(index.position(&v.name).is_some());
    }
    let signed = index.sign(&key()).unwrap();
    let (again, _) = Index::open(signed.as_bytes(), &keys()).unwrap();
    assert_eq!(&again, index);
}
