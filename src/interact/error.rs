//! Why a WeCom callback was refused: shared by the protocol (`crypto`) and the event
//! reader (`event`), so that neither needs the other for it.

/// Why a callback was refused. Messages name the field at fault, never a credential or the
/// request's content.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The envelope, the XML, the base64 or the plaintext layout is not what WeCom sends.
    #[error("malformed callback: {0}")]
    Malformed(String),
    /// `msg_signature` is not ours for this token, timestamp, nonce and ciphertext.
    #[error("msg_signature does not match the token, timestamp, nonce and ciphertext")]
    BadSignature,
    /// The ciphertext's length or padding is wrong: tampered, or another key's.
    #[error("ciphertext does not decrypt: {0}")]
    Decrypt(&'static str),
    /// It decrypted, but the receive id inside is not our corp id: a message for another
    /// corp or app sharing the key, or a configuration mix-up.
    #[error("the receive id inside the message is not this app's receive_id (corp id)")]
    WrongReceiver,
    /// The timestamp is further from our clock than the freshness window allows; negative
    /// ages are in the future.
    #[error(
        "timestamp is {age_secs} s from our clock (negative: in the future), outside the freshness window"
    )]
    Stale { age_secs: i64 },
    /// The configured token, EncodingAESKey or receive id cannot be used.
    #[error("{0}")]
    BadKey(String),
}

impl CallbackError {
    /// Every [`CallbackError::reason`], for registering metric labels up front.
    pub const REASONS: [&'static str; 6] = ["malformed", "signature", "decrypt", "receiver", "stale", "key"];

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            CallbackError::Malformed(_) => "malformed",
            CallbackError::BadSignature => "signature",
            CallbackError::Decrypt(_) => "decrypt",
            CallbackError::WrongReceiver => "receiver",
            CallbackError::Stale { .. } => "stale",
            CallbackError::BadKey(_) => "key",
        }
    }
}
