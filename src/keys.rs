//! The server secret and what is derived from it: callback tokens and sealed activity secrets.
//! Every replica derives the same keys, so any of them can verify a callback or read a secret.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::executor::Secrets;
use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Secrets per executor name, as given with the request that created or started an activity.
pub type ActivitySecrets = BTreeMap<String, Secrets>;

#[derive(Clone)]
pub struct Keys {
    callback: Vec<u8>,
    sealing: chacha20poly1305::Key,
}

impl Keys {
    pub fn new(server_secret: &Secret) -> Keys {
        Keys {
            callback: derive(server_secret, b"odm-devops callback token"),
            sealing: *chacha20poly1305::Key::from_slice(&derive(
                server_secret,
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

    pub fn seal(&self, secrets: &ActivitySecrets) -> String {
        let plain: BTreeMap<&String, BTreeMap<&String, &str>> = secrets
            .iter()
            .map(|(executor, s)| (executor, s.iter().map(|(k, v)| (k, v.expose())).collect()))
            .collect();
        let plain = serde_json::to_vec(&plain).expect("secrets serialize");
        let cipher = ChaCha20Poly1305::new(&self.sealing);
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(&nonce, plain.as_ref())
            .expect("encryption cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// `Err` when the secrets were sealed with another server secret or were altered.
    pub fn unseal(&self, sealed: &str) -> Result<ActivitySecrets, String> {
        const NONCE: usize = 12;
        let bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| "the stored secrets are corrupt".to_owned())?;
        if bytes.len() < NONCE {
            return Err("the stored secrets are corrupt".into());
        }
        let (nonce, sealed) = bytes.split_at(NONCE);
        let plain = ChaCha20Poly1305::new(&self.sealing)
            .decrypt(chacha20poly1305::Nonce::from_slice(nonce), sealed)
            .map_err(|_| {
                "the activity's secrets cannot be read: the server secret (callbacks.secret) changed since they were given".to_owned()
            })?;
        let plain: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_slice(&plain)
            .map_err(|_| "the stored secrets are corrupt".to_owned())?;
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

fn derive(secret: &Secret, purpose: &[u8]) -> Vec<u8> {
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(secret.expose().as_bytes()).expect("any key length");
    mac.update(purpose);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_tokens_are_bound_to_task_and_attempt() {
        let keys = Keys::new(&Secret::new("server"));
        let token = keys.callback_token(7, 1);
        assert!(keys.verify_callback_token(7, 1, &token));
        assert!(!keys.verify_callback_token(7, 2, &token), "another attempt");
        assert!(!keys.verify_callback_token(8, 1, &token), "another task");
        assert!(!keys.verify_callback_token(7, 1, "not-a-token"));
        let other = Keys::new(&Secret::new("other server"));
        assert!(
            !other.verify_callback_token(7, 1, &token),
            "another server secret"
        );
    }

    #[test]
    fn sealed_secrets_round_trip_and_hide_their_values() {
        let keys = Keys::new(&Secret::new("server"));
        let mut secrets = ActivitySecrets::new();
        secrets
            .entry("azure-devops".into())
            .or_default()
            .insert("pat".into(), Secret::new("my-pat-value"));
        let sealed = keys.seal(&secrets);
        assert!(!sealed.contains("my-pat-value"));
        let opened = keys.unseal(&sealed).unwrap();
        assert_eq!(opened["azure-devops"]["pat"].expose(), "my-pat-value");
        let err = Keys::new(&Secret::new("changed"))
            .unseal(&sealed)
            .unwrap_err();
        assert!(err.contains("server secret"), "{err}");
    }
}
