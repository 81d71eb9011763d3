//! The server secret and what is derived from it: callback tokens and sealed activity secrets.
//! Every replica derives the same keys, so any of them can verify a callback or read a secret.
//!
//! Sealed secrets are ChaCha20-Poly1305 with the activity's id as associated data: a sealed
//! blob copied to another activity does not open. The sealing key is derived from `secrets.key`
//! when it is given, else from the callback secret (which, when generated, is kept in the same
//! database as the sealed blobs: the start warns about that).

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::executor::Secrets;
use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Secrets per executor name, as given with the request that created or started an activity.
pub type ActivitySecrets = BTreeMap<String, Secrets>;

/// Marks blobs sealed with the activity bound; blobs without it (sealed by versions before it)
/// are refused rather than opened unbound. URL-safe base64 never holds a `.`.
const SEALED_PREFIX: &str = "v2.";

#[derive(Clone)]
pub struct Keys {
    callback: Vec<u8>,
    sealing: chacha20poly1305::Key,
}

impl Keys {
    /// `sealing_key` is `secrets.key`; without it secrets are sealed with a key derived from
    /// `server_secret` (the callback secret).
    pub fn new(server_secret: &Secret, sealing_key: Option<&Secret>) -> Keys {
        let sealing_from = sealing_key
            .filter(|k| !k.is_empty())
            .unwrap_or(server_secret);
        Keys {
            callback: derive(server_secret, b"odm-devops callback token"),
            sealing: *chacha20poly1305::Key::from_slice(&derive(
                sealing_from,
                b"odm-devops sealed secrets",
            )),
        }
    }

    /// A fresh random server secret, for a database that has none yet.
    pub fn generate_secret() -> String {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut OsRng, &mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The callback token of one dispatch attempt of a task.
    pub fn callback_token(&self, task_id: i64, attempt: i32) -> String {
        URL_SAFE_NO_PAD.encode(self.callback_mac(task_id, attempt).finalize().into_bytes())
    }

    pub fn verify_callback_token(&self, task_id: i64, attempt: i32, token: &str) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        // Constant-time comparison: a token must not be guessable byte by byte.
        self.callback_mac(task_id, attempt)
            .verify_slice(&bytes)
            .is_ok()
    }

    fn callback_mac(&self, task_id: i64, attempt: i32) -> HmacSha256 {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.callback).expect("HMAC takes any key length");
        mac.update(format!("task:{task_id}:attempt:{attempt}").as_bytes());
        mac
    }

    /// The secrets of activity `activity_id`, sealed for it alone.
    pub fn seal(&self, activity_id: i64, secrets: &ActivitySecrets) -> String {
        let plain: BTreeMap<&String, BTreeMap<&String, &str>> = secrets
            .iter()
            .map(|(executor, s)| (executor, s.iter().map(|(k, v)| (k, v.expose())).collect()))
            .collect();
        let plain = serde_json::to_vec(&plain).expect("secrets serialize");
        let cipher = ChaCha20Poly1305::new(&self.sealing);
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let bound = Payload {
            msg: &plain,
            aad: &associated_data(activity_id),
        };
        let sealed = cipher
            .encrypt(&nonce, bound)
            .expect("encryption cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// `Err` (a message for the task's errors) when the secrets were sealed with another key,
    /// for another activity, by a version that did not bind them to it, or were altered.
    pub fn unseal(&self, activity_id: i64, sealed: &str) -> Result<ActivitySecrets, String> {
        const NONCE: usize = 12;
        let corrupt = || "the activity's stored secrets are corrupt".to_owned();
        let Some(encoded) = sealed.strip_prefix(SEALED_PREFIX) else {
            return Err(
                "the activity's secrets were sealed by an earlier version of odm-devops, \
                        which did not bind them to their activity, and are not used: create a new \
                        activity and give its secrets again"
                    .to_owned(),
            );
        };
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| corrupt())?;
        if bytes.len() < NONCE {
            return Err(corrupt());
        }
        let (nonce, sealed) = bytes.split_at(NONCE);
        let bound = Payload {
            msg: sealed,
            aad: &associated_data(activity_id),
        };
        let plain = ChaCha20Poly1305::new(&self.sealing)
            .decrypt(chacha20poly1305::Nonce::from_slice(nonce), bound)
            .map_err(|_| {
                "the activity's secrets cannot be opened: the sealing key changed since they were \
                 given (secrets.key, or callbacks.secret when secrets.key is not set), or they \
                 were sealed for another activity"
                    .to_owned()
            })?;
        let plain: BTreeMap<String, BTreeMap<String, String>> =
            serde_json::from_slice(&plain).map_err(|_| corrupt())?;
        Ok(plain
            .into_iter()
            .map(|(executor, s)| {
                (
                    executor,
                    s.into_iter().map(|(k, v)| (k, Secret::new(v))).collect(),
                )
            })
            .collect())
    }
}

fn associated_data(activity_id: i64) -> Vec<u8> {
    format!("odm-devops activity:{activity_id}").into_bytes()
}

fn derive(secret: &Secret, purpose: &[u8]) -> Vec<u8> {
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(secret.expose().as_bytes()).expect("any key length");
    mac.update(purpose);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> Keys {
        Keys::new(&Secret::new(secret), None)
    }

    fn secrets() -> ActivitySecrets {
        let mut secrets = ActivitySecrets::new();
        secrets
            .entry("azure-devops".into())
            .or_default()
            .insert("pat".into(), Secret::new("my-pat-value"));
        secrets
    }

    #[test]
    fn callback_tokens_are_bound_to_task_and_attempt() {
        let keys = keys("server");
        let token = keys.callback_token(7, 1);
        assert!(keys.verify_callback_token(7, 1, &token));
        assert!(!keys.verify_callback_token(7, 2, &token), "another attempt");
        assert!(!keys.verify_callback_token(8, 1, &token), "another task");
        assert!(!keys.verify_callback_token(7, 1, "not-a-token"));
        let other = Keys::new(&Secret::new("other server"), None);
        assert!(
            !other.verify_callback_token(7, 1, &token),
            "another server secret"
        );
    }

    #[test]
    fn sealed_secrets_round_trip_and_hide_their_values() {
        let keys = keys("server");
        let sealed = keys.seal(12, &secrets());
        assert!(!sealed.contains("my-pat-value"));
        let opened = keys.unseal(12, &sealed).unwrap();
        assert_eq!(opened["azure-devops"]["pat"].expose(), "my-pat-value");
        let err = Keys::new(&Secret::new("changed"), None)
            .unseal(12, &sealed)
            .unwrap_err();
        assert!(err.contains("the sealing key changed"), "{err}");
    }

    /// A sealed blob copied into another activity's row must not give that activity the secrets.
    #[test]
    fn sealed_secrets_open_only_for_their_activity() {
        let keys = keys("server");
        let sealed = keys.seal(12, &secrets());
        let err = keys.unseal(13, &sealed).unwrap_err();
        assert!(err.contains("sealed for another activity"), "{err}");
        assert!(keys.unseal(-12, &sealed).is_err());
    }

    #[test]
    fn the_sealing_key_is_secrets_key_when_given_and_leaves_callbacks_alone() {
        let apart = Keys::new(&Secret::new("server"), Some(&Secret::new("sealing key")));
        let sealed = apart.seal(1, &secrets());
        assert!(
            keys("server").unseal(1, &sealed).is_err(),
            "not the callback secret's key"
        );
        let same_key_new_server =
            Keys::new(&Secret::new("rotated"), Some(&Secret::new("sealing key")));
        assert!(
            same_key_new_server.unseal(1, &sealed).is_ok(),
            "secrets.key alone decides the sealing"
        );
        assert_eq!(
            apart.callback_token(5, 1),
            keys("server").callback_token(5, 1),
            "callback tokens do not depend on secrets.key"
        );
        let blank = Keys::new(&Secret::new("server"), Some(&Secret::new("")));
        assert!(blank.unseal(1, &keys("server").seal(1, &secrets())).is_ok());
    }

    /// Blobs of the earlier, unbound format (base64 with no version prefix) are refused with
    /// a message saying what to do, never opened without their binding.
    #[test]
    fn secrets_sealed_by_an_earlier_version_are_refused_clearly() {
        let keys = keys("server");
        let bound = keys.seal(3, &secrets());
        let unprefixed = bound.strip_prefix(SEALED_PREFIX).unwrap();
        let err = keys.unseal(3, unprefixed).unwrap_err();
        assert!(err.contains("sealed by an earlier version"), "{err}");
        assert!(err.contains("create a new activity"), "{err}");
        let err = keys.unseal(3, "v2.!!").unwrap_err();
        assert!(err.contains("corrupt"), "{err}");
    }
}
