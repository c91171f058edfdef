//! WeCom's encrypted callback protocol (WXBizMsgCrypt, 加解密方案说明): the SHA1 signature
//! over the sorted token, timestamp, nonce and ciphertext; AES-256-CBC keyed from the
//! EncodingAESKey, padded PKCS#7-style to 32 bytes; the plaintext layout of 16 random bytes,
//! a big-endian length, the message and the receive id (our corp id). Here so the HTTP
//! layer can answer URL verification and hand decrypted events to [`super::event`] without
//! knowing any of it, and so every check a forged or replayed request must fail sits in one
//! place, next to WeCom's published sample vectors.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::{alphabet, Engine};
use cbc::cipher::block_padding::{NoPadding, Pkcs7, RawPadding};
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use quick_xml::events::BytesText;
use quick_xml::Writer;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

pub use super::error::CallbackError;
use super::event;
use crate::secret::Secret;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// The longest `Encrypt` (or `echostr`) we decrypt, in base64 characters. A card click is
/// well under 2 KiB; the bound keeps a hostile request from costing more than a hash and a
/// decryption of 48 KiB.
pub const MAX_ENCRYPTED_LEN: usize = 64 * 1024;

/// The longest event body we parse: the `Encrypt` bound plus room for the envelope's other
/// elements.
pub const MAX_BODY_LEN: usize = MAX_ENCRYPTED_LEN + 4 * 1024;

/// WeCom pads to a multiple of 32 bytes, not AES's 16: every official sample library uses a
/// 32-byte PKCS#7 block, and pad values above 16 occur in WeCom's own ciphertexts.
const PAD_BLOCK: usize = 32;
const RANDOM_LEN: usize = 16;
const KEY_LEN: usize = 32;
const ENCODING_AES_KEY_LEN: usize = 43;

/// Key decoding tolerates non-zero trailing bits: 43 characters carry 258 bits for a
/// 256-bit key, and WeCom's own sample keys (and keys typed into the admin console) set the
/// last two bits. The official libraries' decoders ignore them; a strict decoder would
/// refuse keys WeCom accepts.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

fn malformed(what: impl Into<String>) -> CallbackError {
    CallbackError::Malformed(what.into())
}

/// One app's callback credentials: the token (signatures), the AES key (encryption) and
/// the receive id that must close every plaintext (the corp id, for a self-built app).
#[derive(Clone)]
pub struct CallbackCrypto {
    token: Secret,
    key: [u8; KEY_LEN],
    receive_id: String,
}

impl fmt::Debug for CallbackCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackCrypto")
            .field("token", &self.token)
            .field("key", &"<redacted>")
            .field("receive_id", &self.receive_id)
            .finish()
    }
}

impl CallbackCrypto {
    /// Errors name the field ("encoding_aes_key must be 43 characters of base64"), never the
    /// value.
    pub fn new(
        token: Secret,
        encoding_aes_key: &Secret,
        receive_id: &str,
    ) -> Result<CallbackCrypto, CallbackError> {
        // An empty token would make signatures a function of public values only.
        if token.is_empty() {
            return Err(CallbackError::BadKey("token must not be empty".into()));
        }
        if receive_id.is_empty() {
            return Err(CallbackError::BadKey(
                "receive_id (the corp id) must not be empty".into(),
            ));
        }
        let bad_key = || CallbackError::BadKey("encoding_aes_key must be 43 characters of base64".into());
        let encoded = encoding_aes_key.expose();
        if encoded.len() != ENCODING_AES_KEY_LEN {
            return Err(bad_key());
        }
        let mut padded = String::with_capacity(ENCODING_AES_KEY_LEN + 1);
        padded.push_str(encoded);
        padded.push('=');
        let decoded = KEY_BASE64.decode(&padded).map_err(|_| bad_key())?;
        let key: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| bad_key())?;
        Ok(CallbackCrypto {
            token,
            key,
            receive_id: receive_id.to_string(),
        })
    }

    /// The receive id every plaintext must end with.
    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }

    /// `msg_signature`: lowercase hex SHA1 of the four strings sorted bytewise and
    /// concatenated (the official libraries sort the same way).
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypted: &str) -> String {
        let mut parts = [self.token.expose(), timestamp, nonce, encrypted];
        parts.sort_unstable();
        let mut hash = Sha1::new();
        for part in parts {
            hash.update(part.as_bytes());
        }
        format!("{:x}", hash.finalize())
    }

    /// Constant-time comparison (subtle) of the given signature with ours, so response
    /// timing tells nothing about how much of a guess was right.
    pub fn check_signature(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        encrypted: &str,
    ) -> Result<(), CallbackError> {
        let ours = self.signature(timestamp, nonce, encrypted);
        if bool::from(ours.as_bytes().ct_eq(msg_signature.as_bytes())) {
            Ok(())
        } else {
            Err(CallbackError::BadSignature)
        }
    }

    /// URL verification (the `GET` WeCom sends when the callback URL is saved): checks the
    /// signature over `echostr` and returns its plaintext, the body to answer with.
    /// `echostr` must be the query value already percent-decoded (WeCom escapes `+` as
    /// `%2B`, so form decoding is safe).
    pub fn verify_url(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        echostr: &str,
    ) -> Result<String, CallbackError> {
        check_encrypted_len(echostr, "echostr")?;
        self.check_signature(msg_signature, timestamp, nonce, echostr)?;
        self.decrypt(echostr)
    }

    /// Parses the outer XML envelope, checks the signature, decrypts, checks the receive
    /// id; returns the inner XML.
    pub fn decrypt_message(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        body: &[u8],
    ) -> Result<String, CallbackError> {
        if body.len() > MAX_BODY_LEN {
            return Err(malformed(format!("body is over {MAX_BODY_LEN} bytes")));
        }
        let body = std::str::from_utf8(body).map_err(|_| malformed("body is not UTF-8"))?;
        let encrypted = event::envelope_encrypt(body)?;
        check_encrypted_len(&encrypted, "Encrypt")?;
        self.check_signature(msg_signature, timestamp, nonce, &encrypted)?;
        self.decrypt(&encrypted)
    }

    /// Base64 → plaintext message, the padding and the receive id checked. Signatures are
    /// the caller's business ([`CallbackCrypto::verify_url`] and
    /// [`CallbackCrypto::decrypt_message`] check them first).
    pub fn decrypt(&self, encrypted: &str) -> Result<String, CallbackError> {
        check_encrypted_len(encrypted, "Encrypt")?;
        let mut buffer = STANDARD
            .decode(encrypted)
            .map_err(|_| malformed("Encrypt is not base64"))?;
        if buffer.is_empty() || buffer.len() % PAD_BLOCK != 0 {
            return Err(CallbackError::Decrypt(
                "ciphertext is not a whole number of 32-byte blocks",
            ));
        }
        let plain = Aes256CbcDec::new(&self.key.into(), &self.iv().into())
            .decrypt_padded_mut::<NoPadding>(&mut buffer)
            .map_err(|_| CallbackError::Decrypt("ciphertext is not whole AES blocks"))?;
        // The length check above guarantees a last 32-byte block.
        let last = plain.len() - PAD_BLOCK;
        let kept = Pkcs7::raw_unpad(&plain[last..])
            .map_err(|_| CallbackError::Decrypt("bad padding"))?
            .len();
        let content = &plain[..last + kept];

        let (_random, rest) = content
            .split_first_chunk::<RANDOM_LEN>()
            .ok_or_else(|| malformed("plaintext is shorter than its random prefix"))?;
        let (declared, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("plaintext is shorter than its length field"))?;
        let declared = usize::try_from(u32::from_be_bytes(*declared))
            .map_err(|_| malformed("declared message length does not fit"))?;
        let (msg, receive_id) = rest
            .split_at_checked(declared)
            .ok_or_else(|| malformed("declared message length is beyond the plaintext"))?;
        if receive_id != self.receive_id.as_bytes() {
            return Err(CallbackError::WrongReceiver);
        }
        String::from_utf8(msg.to_vec()).map_err(|_| malformed("message is not UTF-8"))
    }

    /// Encrypts with a fresh random prefix.
    ///
    /// The prefix comes from fastrand, not a CSPRNG: the project has no CSPRNG among its
    /// direct dependencies, and the prefix is not a key. It only keeps two encryptions of
    /// one message from sharing a first block under the fixed IV, and what we encrypt is
    /// our own reply, never attacker-chosen plaintext. WeCom's official libraries use
    /// non-cryptographic generators here too (Python `random`, Go `math/rand`, PHP
    /// `mt_rand`).
    pub fn encrypt(&self, msg: &str) -> String {
        let mut random = [0; RANDOM_LEN];
        fastrand::fill(&mut random);
        self.encrypt_with_random(msg, random)
    }

    /// Deterministic encryption, for test vectors: `random` is the 16-byte prefix.
    ///
    /// # Panics
    ///
    /// When `msg` is 4 GiB or longer, which its 4-byte length field cannot say.
    pub fn encrypt_with_random(&self, msg: &str, random: [u8; RANDOM_LEN]) -> String {
        let declared = u32::try_from(msg.len()).expect("a callback message is under 4 GiB");
        let content_len = RANDOM_LEN + 4 + msg.len() + self.receive_id.len();
        // A full block of padding when the content already fills its last block, as PKCS#7
        // requires (and WeCom's libraries do).
        let padded_len = (content_len / PAD_BLOCK + 1) * PAD_BLOCK;
        let mut buffer = Vec::with_capacity(padded_len);
        buffer.extend_from_slice(&random);
        buffer.extend_from_slice(&declared.to_be_bytes());
        buffer.extend_from_slice(msg.as_bytes());
        buffer.extend_from_slice(self.receive_id.as_bytes());
        buffer.resize(padded_len, 0);
        let last = padded_len - PAD_BLOCK;
        Pkcs7::raw_pad(&mut buffer[last..], content_len - last);
        let cipher = Aes256CbcEnc::new(&self.key.into(), &self.iv().into())
            .encrypt_padded_mut::<NoPadding>(&mut buffer, padded_len)
            .expect("whole 32-byte blocks need no further padding");
        STANDARD.encode(cipher)
    }

    /// A passive reply (被动回复): `msg` encrypted and signed, in the envelope WeCom expects
    /// back.
    pub fn encrypt_reply(&self, msg: &str, timestamp: &str, nonce: &str) -> String {
        self.reply_xml(&self.encrypt(msg), timestamp, nonce)
    }

    /// The reply envelope around an existing ciphertext, in the element order and form of
    /// the official Go library's `WXBizMsg4Send` (CDATA except for `TimeStamp`).
    fn reply_xml(&self, encrypted: &str, timestamp: &str, nonce: &str) -> String {
        let signature = self.signature(timestamp, nonce, encrypted);
        let mut writer = Writer::new(Vec::new());
        writer
            .create_element("xml")
            .write_inner_content(|writer| {
                event::write_cdata(writer, "Encrypt", encrypted)?;
                event::write_cdata(writer, "MsgSignature", &signature)?;
                writer
                    .create_element("TimeStamp")
                    .write_text_content(BytesText::new(timestamp))?;
                event::write_cdata(writer, "Nonce", nonce)
            })
            .expect("writing XML into memory cannot fail");
        String::from_utf8(writer.into_inner()).expect("the XML writer writes what it was given: UTF-8")
    }

    /// AES-CBC's IV: WeCom fixes it to the key's first 16 bytes.
    fn iv(&self) -> [u8; 16] {
        let mut iv = [0; 16];
        iv.copy_from_slice(&self.key[..16]);
        iv
    }
}

fn check_encrypted_len(encrypted: &str, field: &str) -> Result<(), CallbackError> {
    if encrypted.len() > MAX_ENCRYPTED_LEN {
        return Err(malformed(format!(
            "{field} is over {MAX_ENCRYPTED_LEN} characters"
        )));
    }
    Ok(())
}

/// Checks `timestamp` (unix seconds, as WeCom sends it) is within `window` of `now_unix`,
/// both directions: a replayed request carries its original, still validly signed,
/// timestamp, so age is the only thing that dates it.
pub fn check_freshness(timestamp: &str, now_unix: i64, window: Duration) -> Result<(), CallbackError> {
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("timestamp is not a number of seconds"));
    }
    let sent: i64 = timestamp
        .parse()
        .map_err(|_| malformed("timestamp is out of range"))?;
    let age_secs = now_unix.saturating_sub(sent);
    if age_secs.unsigned_abs() > window.as_secs() {
        return Err(CallbackError::Stale { age_secs });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // WeCom's published sample vectors, set A: sbzhu/weworkapi_python, callback/Sample.py
    // as of commit 609f460 (2025-07-16; unchanged since 2018 but for comments), whose
    // URL verification callback_python3/Sample.py repeats. Commit 71441bf (2025-08-08)
    // later replaced the token and key with placeholders and kept the rest. Token,
    // EncodingAESKey, corp id and both requests are the sample's, byte for byte.
    const A_TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
    const A_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
    const A_CORP: &str = "ww1436e0e65a779aee";
    const A_VERIFY_SIG: &str = "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb";
    const A_VERIFY_TS: &str = "1476416373";
    const A_VERIFY_NONCE: &str = "47744683";
    const A_ECHOSTR: &str =
        "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA==";
    // The sample does not print the echostr's plaintext; this is what it decrypts to, with
    // the sample's signature, padding and corp id all checking out.
    const A_ECHO_PLAIN: &str = "1288432023552776189";
    const A_POST_SIG: &str = "0c3914025cb4b4d68103f6bfc8db550f79dcf48e";
    const A_POST_TS: &str = "1476422779";
    const A_POST_NONCE: &str = "1597212914";
    const A_POST_BODY: &str = "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>\n<Encrypt><![CDATA[Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+]]></Encrypt>\n<AgentID><![CDATA[1000002]]></AgentID>\n</xml>";
    // The POST decrypts to the very message the same sample then uses as its reply
    // example (sRespData), byte for byte.
    const A_POST_PLAIN: &str = "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName><CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content><MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>";

    // Set B: the older example that sbzhu/weworkapi_golang sample.go (commit f9cd437,
    // before 7e1b55d blanked the token and key) and sbzhu/weworkapi_php callback/Sample.php
    // (commit f2c836f, before 44f41c4 did the same) share: token, EncodingAESKey, corp id,
    // the URL verification and the POST (body from sample.go's reqData).
    // workweixin/weworkapi_cplusplus Sample.cpp has the same credentials and URL
    // verification, and the POST's ciphertext in a JSON body.
    const B_TOKEN: &str = "QDG6eK";
    const B_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
    const B_CORP: &str = "wx5823bf96d3bd56c7";
    const B_VERIFY_SIG: &str = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3";
    const B_VERIFY_TS: &str = "1409659589";
    const B_VERIFY_NONCE: &str = "263014780";
    // The query value is P9nAzCzyDtyTWESHep1vC5X9xho%2FqYX3...%3D%3D; this is it decoded,
    // as the samples pass it.
    const B_ECHOSTR: &str =
        "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==";
    // Not printed by the samples either; what it decrypts to.
    const B_ECHO_PLAIN: &str = "1616140317555161061";
    const B_POST_SIG: &str = "477715d11cdb4164915debcba66cb864d751f3e6";
    const B_POST_TS: &str = "1409659813";
    const B_POST_NONCE: &str = "1372623149";
    const B_ENCRYPT: &str = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==";
    // The plaintext sbzhu/weworkapi_php callback/Sample.php gives in its comment after
    // DecryptMsg (there with CRLF line ends, as the whole file has; the ciphertext holds LF,
    // and nothing after `</xml>`).
    const B_POST_PLAIN: &str = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n<FromUserName><![CDATA[mycreate]]></FromUserName>\n<CreateTime>1409659813</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[hello]]></Content>\n<MsgId>4561255354251345929</MsgId>\n<AgentID>218</AgentID>\n</xml>";

    fn b_post_body() -> String {
        format!("<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[{B_ENCRYPT}]]></Encrypt><AgentID><![CDATA[218]]></AgentID></xml>")
    }

    fn crypto_a() -> CallbackCrypto {
        CallbackCrypto::new(Secret::new(A_TOKEN), &Secret::new(A_KEY), A_CORP).unwrap()
    }

    fn crypto_b() -> CallbackCrypto {
        CallbackCrypto::new(Secret::new(B_TOKEN), &Secret::new(B_KEY), B_CORP).unwrap()
    }

    /// The random prefix a published ciphertext was made with, recovered by decrypting it
    /// (so a re-encryption can be compared byte for byte).
    fn random_prefix(crypto: &CallbackCrypto, encrypted: &str) -> [u8; 16] {
        let mut buffer = STANDARD.decode(encrypted).unwrap();
        let plain = Aes256CbcDec::new(&crypto.key.into(), &crypto.iv().into())
            .decrypt_padded_mut::<NoPadding>(&mut buffer)
            .unwrap();
        plain[..16].try_into().unwrap()
    }

    #[test]
    fn the_samples_keys_decode_although_their_last_bits_are_set() {
        // Both sample keys end in a character whose low two bits are not zero; a strict
        // base64 decoder refuses them.
        assert!(STANDARD.decode(format!("{A_KEY}=")).is_err());
        assert!(STANDARD.decode(format!("{B_KEY}=")).is_err());
        assert_eq!(crypto_a().key.len(), 32);
        assert_eq!(crypto_b().key.len(), 32);
    }

    #[test]
    fn signatures_reproduce_the_published_msg_signatures() {
        let a = crypto_a();
        assert_eq!(a.signature(A_VERIFY_TS, A_VERIFY_NONCE, A_ECHOSTR), A_VERIFY_SIG);
        let a_encrypt = event::envelope_encrypt(A_POST_BODY).unwrap();
        assert_eq!(a.signature(A_POST_TS, A_POST_NONCE, &a_encrypt), A_POST_SIG);
        let b = crypto_b();
        assert_eq!(b.signature(B_VERIFY_TS, B_VERIFY_NONCE, B_ECHOSTR), B_VERIFY_SIG);
        assert_eq!(b.signature(B_POST_TS, B_POST_NONCE, B_ENCRYPT), B_POST_SIG);
    }

    #[test]
    fn verify_url_answers_the_samples_echostr() {
        assert_eq!(
            crypto_a()
                .verify_url(A_VERIFY_SIG, A_VERIFY_TS, A_VERIFY_NONCE, A_ECHOSTR)
                .unwrap(),
            A_ECHO_PLAIN
        );
        assert_eq!(
            crypto_b()
                .verify_url(B_VERIFY_SIG, B_VERIFY_TS, B_VERIFY_NONCE, B_ECHOSTR)
                .unwrap(),
            B_ECHO_PLAIN
        );
    }

    #[test]
    fn decrypt_message_gives_the_samples_published_plaintext() {
        assert_eq!(
            crypto_a()
                .decrypt_message(A_POST_SIG, A_POST_TS, A_POST_NONCE, A_POST_BODY.as_bytes())
                .unwrap(),
            A_POST_PLAIN
        );
        assert_eq!(
            crypto_b()
                .decrypt_message(B_POST_SIG, B_POST_TS, B_POST_NONCE, b_post_body().as_bytes())
                .unwrap(),
            B_POST_PLAIN
        );
    }

    #[test]
    fn encryption_reproduces_the_published_ciphertexts_byte_for_byte() {
        // Same key, IV, layout and 32-byte padding as WeCom: with the random prefix WeCom
        // used, our encryption of the plaintext is WeCom's ciphertext. Their pad values
        // (7, 30, 7, 22) include some above 16.
        let a = crypto_a();
        let a_encrypt = event::envelope_encrypt(A_POST_BODY).unwrap();
        for (crypto, plain, published) in [
            (&a, A_ECHO_PLAIN, A_ECHOSTR),
            (&a, A_POST_PLAIN, a_encrypt.as_str()),
            (&crypto_b(), B_ECHO_PLAIN, B_ECHOSTR),
            (&crypto_b(), B_POST_PLAIN, B_ENCRYPT),
        ] {
            let random = random_prefix(crypto, published);
            assert_eq!(crypto.encrypt_with_random(plain, random), published);
        }
    }

    #[test]
    fn the_reply_envelope_is_signed_like_wecoms_requests() {
        // No sample prints a reply made with a known random prefix, but a reply's signature
        // is computed exactly like a request's: around the published POST ciphertext, with
        // its timestamp and nonce, it must carry the published msg_signature.
        let b = crypto_b();
        assert_eq!(
            b.reply_xml(B_ENCRYPT, B_POST_TS, B_POST_NONCE),
            format!(
                "<xml><Encrypt><![CDATA[{B_ENCRYPT}]]></Encrypt><MsgSignature><![CDATA[{B_POST_SIG}]]></MsgSignature><TimeStamp>{B_POST_TS}</TimeStamp><Nonce><![CDATA[{B_POST_NONCE}]]></Nonce></xml>"
            )
        );
        // Whatever the caller passes as timestamp and nonce cannot break the envelope.
        let reply = b.reply_xml(B_ENCRYPT, "<1&>", "n]]><x>");
        assert!(reply.contains("<TimeStamp>&lt;1&amp;&gt;</TimeStamp>"), "{reply}");
        assert!(
            reply.contains("<Nonce><![CDATA[n]]]]><![CDATA[><x>]]></Nonce>"),
            "{reply}"
        );
        assert_eq!(event::envelope_encrypt(&reply).unwrap(), B_ENCRYPT);
    }

    #[test]
    fn an_encrypted_reply_decrypts_back() {
        let b = crypto_b();
        let msg = "<xml><ToUserName><![CDATA[mycreate]]></ToUserName><Content><![CDATA[this is a test]]></Content></xml>";
        let reply = b.encrypt_reply(msg, B_POST_TS, B_POST_NONCE);
        let encrypt = event::envelope_encrypt(&reply).unwrap();
        let signature = b.signature(B_POST_TS, B_POST_NONCE, &encrypt);
        assert!(reply.contains(&format!("<MsgSignature><![CDATA[{signature}]]></MsgSignature>")));
        assert_eq!(
            b.decrypt_message(&signature, B_POST_TS, B_POST_NONCE, reply.as_bytes())
                .unwrap(),
            msg
        );
    }

    #[test]
    fn encryption_round_trips_at_every_padding_length() {
        let b = crypto_b();
        // 20 + 18 bytes of header and corp id: these lengths cover pad values 1 to 32.
        for len in 0..80 {
            let msg = "x".repeat(len);
            let encrypted = b.encrypt_with_random(&msg, *b"0123456789abcdef");
            assert_eq!(STANDARD.decode(&encrypted).unwrap().len() % 32, 0);
            assert_eq!(b.decrypt(&encrypted).unwrap(), msg, "length {len}");
        }
        let msg = "告警已静默 ✓";
        assert_eq!(b.decrypt(&b.encrypt(msg)).unwrap(), msg);
        assert_ne!(b.encrypt(msg), b.encrypt(msg), "a fresh random prefix each time");
    }

    #[test]
    fn a_wrong_signature_is_refused() {
        let b = crypto_b();
        let wrong = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd4";
        assert!(matches!(
            b.verify_url(wrong, B_VERIFY_TS, B_VERIFY_NONCE, B_ECHOSTR),
            Err(CallbackError::BadSignature)
        ));
        // A different timestamp or nonce is a different signature.
        assert!(matches!(
            b.verify_url(B_VERIFY_SIG, "1409659590", B_VERIFY_NONCE, B_ECHOSTR),
            Err(CallbackError::BadSignature)
        ));
        assert!(matches!(
            b.decrypt_message(B_VERIFY_SIG, B_POST_TS, B_POST_NONCE, b_post_body().as_bytes()),
            Err(CallbackError::BadSignature)
        ));
        assert!(matches!(
            b.check_signature("", B_VERIFY_TS, B_VERIFY_NONCE, B_ECHOSTR),
            Err(CallbackError::BadSignature)
        ));
        assert!(matches!(
            b.check_signature(
                &B_VERIFY_SIG.to_uppercase(),
                B_VERIFY_TS,
                B_VERIFY_NONCE,
                B_ECHOSTR
            ),
            Err(CallbackError::BadSignature)
        ));
        // Another app's token.
        let other = CallbackCrypto::new(Secret::new("other"), &Secret::new(B_KEY), B_CORP).unwrap();
        assert!(matches!(
            other.verify_url(B_VERIFY_SIG, B_VERIFY_TS, B_VERIFY_NONCE, B_ECHOSTR),
            Err(CallbackError::BadSignature)
        ));
    }

    #[test]
    fn tampered_ciphertext_fails_the_padding_check() {
        let b = crypto_b();
        let mut bytes = STANDARD.decode(B_ECHOSTR).unwrap();
        let last = bytes.len() - 1;
        // Flipping a bit of the second-to-last block garbles the last block's padding
        // byte in a known way (CBC): 7 becomes 7 ^ 0x40.
        bytes[last - 16] ^= 0x40;
        assert!(matches!(
            b.decrypt(&STANDARD.encode(&bytes)),
            Err(CallbackError::Decrypt("bad padding"))
        ));
        // Padding values that are in range but not repeated are refused as well.
        let mut bytes = STANDARD.decode(B_ECHOSTR).unwrap();
        bytes[last - 16 - 1] ^= 0x01;
        assert!(matches!(
            b.decrypt(&STANDARD.encode(&bytes)),
            Err(CallbackError::Decrypt("bad padding"))
        ));
        // 48 bytes: whole AES blocks, but not WeCom's 32-byte ones.
        let bytes = STANDARD.decode(B_ECHOSTR).unwrap();
        assert!(matches!(
            b.decrypt(&STANDARD.encode(&bytes[..48])),
            Err(CallbackError::Decrypt(_))
        ));
        assert!(matches!(b.decrypt(""), Err(CallbackError::Decrypt(_))));
    }

    #[test]
    fn another_corps_message_is_refused() {
        // The same key configured with another corp id: the sample's plaintext ends in
        // wx5823bf96d3bd56c7, not ours.
        let ours =
            CallbackCrypto::new(Secret::new(B_TOKEN), &Secret::new(B_KEY), "ww0000000000000000").unwrap();
        assert!(matches!(
            ours.verify_url(B_VERIFY_SIG, B_VERIFY_TS, B_VERIFY_NONCE, B_ECHOSTR),
            Err(CallbackError::WrongReceiver)
        ));
        // A prefix of the right id is not the right id.
        let prefix =
            CallbackCrypto::new(Secret::new(B_TOKEN), &Secret::new(B_KEY), "wx5823bf96d3bd56").unwrap();
        assert!(matches!(
            prefix.decrypt(B_ECHOSTR),
            Err(CallbackError::WrongReceiver)
        ));
        let other =
            CallbackCrypto::new(Secret::new(B_TOKEN), &Secret::new(B_KEY), "ww1436e0e65a779aee").unwrap();
        let encrypted = other.encrypt("hello");
        assert!(matches!(
            crypto_b().decrypt(&encrypted),
            Err(CallbackError::WrongReceiver)
        ));
    }

    #[test]
    fn truncated_or_non_base64_ciphertext_is_malformed() {
        let b = crypto_b();
        for text in [
            &B_ECHOSTR[..B_ECHOSTR.len() - 1],
            &B_ECHOSTR[..B_ECHOSTR.len() - 2],
            &B_ECHOSTR[..10],
            "not base64!",
            // A space where a query decoder turned `+` into one.
            &B_ECHOSTR.replace('+', " "),
        ] {
            assert!(
                matches!(b.decrypt(text), Err(CallbackError::Malformed(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn a_declared_length_beyond_the_plaintext_is_malformed() {
        let b = crypto_b();
        // Build plaintexts by hand, correctly padded and encrypted, with lying lengths.
        let encrypt_raw = |content: &[u8]| {
            let padded_len = (content.len() / 32 + 1) * 32;
            let mut buffer = content.to_vec();
            buffer.resize(padded_len, 0);
            let last = padded_len - 32;
            Pkcs7::raw_pad(&mut buffer[last..], content.len() - last);
            let cipher = Aes256CbcEnc::new(&b.key.into(), &b.iv().into())
                .encrypt_padded_mut::<NoPadding>(&mut buffer, padded_len)
                .unwrap();
            STANDARD.encode(cipher)
        };
        let mut content = b"0123456789abcdef".to_vec();
        content.extend_from_slice(&1000u32.to_be_bytes());
        content.extend_from_slice(b"hello");
        content.extend_from_slice(B_CORP.as_bytes());
        assert!(matches!(
            b.decrypt(&encrypt_raw(&content)),
            Err(CallbackError::Malformed(m)) if m.contains("declared message length")
        ));
        content[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            b.decrypt(&encrypt_raw(&content)),
            Err(CallbackError::Malformed(_))
        ));
        // Shorter than the 20-byte header.
        assert!(matches!(
            b.decrypt(&encrypt_raw(b"0123456789abcdef\0\0")),
            Err(CallbackError::Malformed(_))
        ));
        // A message that is not UTF-8.
        let mut content = b"0123456789abcdef".to_vec();
        content.extend_from_slice(&2u32.to_be_bytes());
        content.extend_from_slice(&[0xff, 0xfe]);
        content.extend_from_slice(B_CORP.as_bytes());
        assert!(matches!(
            b.decrypt(&encrypt_raw(&content)),
            Err(CallbackError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_input_is_refused_before_any_work() {
        let b = crypto_b();
        let huge = "A".repeat(MAX_ENCRYPTED_LEN + 4);
        assert!(matches!(b.decrypt(&huge), Err(CallbackError::Malformed(_))));
        // Refused before the signature check: a size problem, not a signature one.
        assert!(matches!(
            b.verify_url(B_VERIFY_SIG, B_VERIFY_TS, B_VERIFY_NONCE, &huge),
            Err(CallbackError::Malformed(_))
        ));
        let body = format!("<xml><Encrypt><![CDATA[{huge}]]></Encrypt></xml>");
        assert!(matches!(
            b.decrypt_message(B_POST_SIG, B_POST_TS, B_POST_NONCE, body.as_bytes()),
            Err(CallbackError::Malformed(_))
        ));
        let body = vec![b' '; MAX_BODY_LEN + 1];
        assert!(matches!(
            b.decrypt_message(B_POST_SIG, B_POST_TS, B_POST_NONCE, &body),
            Err(CallbackError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        let b = crypto_b();
        for body in [
            "".to_string(),
            "not xml".to_string(),
            "<xml><ToUserName>x</ToUserName></xml>".to_string(),
            format!("<xml><Encrypt>{B_ENCRYPT}</Encrypt>"),
            format!("<xml><Encrypt>{B_ENCRYPT}</Encrypt><Encrypt>{B_ENCRYPT}</Encrypt></xml>"),
            format!("<other><Encrypt>{B_ENCRYPT}</Encrypt></other>"),
            format!("<xml><Encrypt><b>{B_ENCRYPT}</b></Encrypt></xml>"),
            format!("<!DOCTYPE xml [<!ENTITY e \"x\">]><xml><Encrypt>{B_ENCRYPT}</Encrypt></xml>"),
        ] {
            assert!(
                matches!(
                    b.decrypt_message(B_POST_SIG, B_POST_TS, B_POST_NONCE, body.as_bytes()),
                    Err(CallbackError::Malformed(_))
                ),
                "{body}"
            );
        }
        assert!(matches!(
            b.decrypt_message(B_POST_SIG, B_POST_TS, B_POST_NONCE, &[0xff, 0x3c]),
            Err(CallbackError::Malformed(_))
        ));
        // Plain text instead of CDATA is the same ciphertext.
        let plain =
            format!("<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><Encrypt>{B_ENCRYPT}</Encrypt></xml>");
        assert_eq!(
            b.decrypt_message(B_POST_SIG, B_POST_TS, B_POST_NONCE, plain.as_bytes())
                .unwrap(),
            B_POST_PLAIN
        );
    }

    #[test]
    fn freshness_is_checked_both_ways() {
        let window = Duration::from_secs(300);
        let now = 1_409_660_000;
        assert!(check_freshness("1409660000", now, window).is_ok());
        assert!(check_freshness("1409659700", now, window).is_ok());
        assert!(check_freshness("1409660300", now, window).is_ok());
        assert!(matches!(
            check_freshness("1409659699", now, window),
            Err(CallbackError::Stale { age_secs: 301 })
        ));
        assert!(matches!(
            check_freshness("1409660400", now, window),
            Err(CallbackError::Stale { age_secs: -400 })
        ));
        assert!(matches!(
            check_freshness("0", now, window),
            Err(CallbackError::Stale {
                age_secs: 1_409_660_000
            })
        ));
        for bad in [
            "",
            "abc",
            "-5",
            "+5",
            " 1409660000",
            "1409660000.5",
            "99999999999999999999",
        ] {
            assert!(
                matches!(
                    check_freshness(bad, now, window),
                    Err(CallbackError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        assert!(check_freshness("1", i64::MIN, Duration::MAX).is_ok());
    }

    #[test]
    fn unusable_configuration_is_refused_by_field() {
        let new = |token: &str, key: &str, corp: &str| {
            CallbackCrypto::new(Secret::new(token), &Secret::new(key), corp).unwrap_err()
        };
        for key in [
            "",
            "short",
            &format!("{B_KEY}="),
            &format!("{B_KEY}A"),
            &B_KEY.replace('j', "!"),
            &B_KEY.replace('j', "="),
        ] {
            let error = new(B_TOKEN, key, B_CORP);
            assert!(matches!(error, CallbackError::BadKey(_)));
            assert_eq!(
                error.to_string(),
                "encoding_aes_key must be 43 characters of base64"
            );
        }
        assert!(matches!(new("", B_KEY, B_CORP), CallbackError::BadKey(m) if m.contains("token")));
        assert!(matches!(new(B_TOKEN, B_KEY, ""), CallbackError::BadKey(m) if m.contains("receive_id")));
    }

    #[test]
    fn formatting_never_shows_the_token_or_the_key() {
        let b = crypto_b();
        let key_hex: String = b.key.iter().map(|byte| format!("{byte:02x}")).collect();
        let key_bytes = format!("{:?}", b.key);
        let mut texts = vec![format!("{b:?}"), format!("{b:#?}")];
        let mut errors = vec![
            CallbackCrypto::new(Secret::new(B_TOKEN), &Secret::new("short-key-value"), B_CORP).unwrap_err(),
            CallbackCrypto::new(Secret::new(B_TOKEN), &Secret::new(format!("{B_KEY}=")), B_CORP).unwrap_err(),
            CallbackCrypto::new(Secret::new(""), &Secret::new(B_KEY), B_CORP).unwrap_err(),
            b.verify_url("0", B_VERIFY_TS, B_VERIFY_NONCE, B_ECHOSTR)
                .unwrap_err(),
            b.decrypt("AAAA").unwrap_err(),
            b.decrypt("!").unwrap_err(),
            CallbackCrypto::new(Secret::new(B_TOKEN), &Secret::new(B_KEY), "other")
                .unwrap()
                .decrypt(B_ECHOSTR)
                .unwrap_err(),
            check_freshness("1", 1000, Duration::from_secs(1)).unwrap_err(),
            b.decrypt_message(B_POST_SIG, B_POST_TS, B_POST_NONCE, b"<xml/>")
                .unwrap_err(),
        ];
        errors.push(CallbackError::Malformed("x".into()));
        let mut reasons: Vec<&str> = errors.iter().map(CallbackError::reason).collect();
        reasons.sort_unstable();
        reasons.dedup();
        let mut all = CallbackError::REASONS.to_vec();
        all.sort_unstable();
        assert_eq!(reasons, all, "every kind of error is formatted below");
        for error in &errors {
            texts.push(format!("{error:?}"));
            texts.push(format!("{error}"));
        }
        for text in &texts {
            for secret in [
                B_TOKEN,
                B_KEY,
                "short-key-value",
                key_hex.as_str(),
                key_bytes.as_str(),
                &key_hex[..16],
            ] {
                assert!(!text.contains(secret), "{text} shows a credential");
            }
        }
        assert!(
            texts[0].contains(B_CORP),
            "the corp id is not a secret: {}",
            texts[0]
        );
    }
}
