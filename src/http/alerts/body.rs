//! Reading a webhook body: whole before any processing turn is taken, within
//! `server.body_timeout`, within `server.max_body_bytes` both on the wire and decoded, and
//! charging every byte it buffers to the budget shared by all bodies being read or waiting
//! (`server.max_buffered_body_bytes`). gzip and deflate are decoded as the bytes arrive,
//! a bounded step at a time, so a zip bomb is refused after inflating at most the limit.

use actix_web::error::PayloadError;
use actix_web::http::header::CONTENT_ENCODING;
use actix_web::web::Bytes;
use actix_web::HttpRequest;
use flate2::{Crc, Decompress, FlushDecompress, Status};
use futures_util::{Stream, StreamExt};
use tokio::time::{timeout_at, Instant};

use crate::http::admission::BodyBudget;

/// What a refusal of an unknown encoding names.
pub const SUPPORTED_ENCODINGS: &str = "gzip, deflate or none (identity)";

/// A buffer starts this small (or at its Content-Length) and doubles: a body that trickles
/// in holds little of the budget, one that arrives at once is copied about once.
const FIRST_BUFFER: usize = 4 * 1024;

/// gzip headers are ten bytes plus optional name, comment and extra fields; senders of
/// webhooks put nothing there, and this bounds what is buffered outside the budget.
const MAX_GZIP_HEADER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Deflate,
}

impl Coding {
    /// The request's `Content-Encoding`; `Err` holds the header's value when it names an
    /// encoding not decoded here (or several: nobody stacks them for a webhook).
    pub fn of(request: &HttpRequest) -> Result<Coding, String> {
        let mut named = Vec::new();
        let mut codings = Vec::new();
        for value in request.headers().get_all(CONTENT_ENCODING) {
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            for coding in text.split(',').map(str::trim) {
                if !coding.is_empty() && !coding.eq_ignore_ascii_case("identity") {
                    codings.push(coding.to_ascii_lowercase());
                }
            }
            named.push(text);
        }
        match codings.as_slice() {
            [] => Ok(Coding::Identity),
            // x-gzip: the old name HTTP still asks receivers to accept (RFC 9110, 8.4.1.3).
            [one] if one == "gzip" || one == "x-gzip" => Ok(Coding::Gzip),
            [one] if one == "deflate" => Ok(Coding::Deflate),
            _ => Err(named.join(", ")),
        }
    }
}

/// A body read whole, with the budget it holds until it is dropped.
pub struct Body {
    bytes: Vec<u8>,
    _budget: BodyBudget,
}

impl Body {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[derive(Debug)]
pub enum BodyError {
    /// The connection failed or ended before the body did.
    Read(PayloadError),
    /// More than the limit on the wire, or (`decoded`) once decoded.
    TooLarge { decoded: bool },
    /// The body did not arrive before the deadline.
    TimedOut,
    /// The budget for buffered bodies had no room before the deadline.
    NoBudget,
    /// A compressed body that cannot be decoded; the text says why.
    Corrupt(String),
}

/// Reads `stream` whole before `deadline`. `length` is the Content-Length, if any (already
/// checked against `limit`).
pub async fn read<S>(
    mut stream: S,
    coding: Coding,
    limit: usize,
    length: Option<usize>,
    budget: BodyBudget,
    deadline: Instant,
) -> Result<Body, BodyError>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    let mut decoder = match coding {
        Coding::Identity => None,
        Coding::Gzip => Some(Decoder::gzip()),
        Coding::Deflate => Some(Decoder::zlib()),
    };
    let mut sink = Sink {
        bytes: Vec::new(),
        filled: 0,
        budget,
        limit,
        // An uncompressed body with a Content-Length ends up exactly that big.
        ceiling: match (coding, length) {
            (Coding::Identity, Some(length)) => length.min(limit),
            _ => limit,
        },
        deadline,
    };
    let mut wire = 0usize;
    loop {
        let chunk = match timeout_at(deadline, stream.next()).await {
            Err(_) => return Err(BodyError::TimedOut),
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(BodyError::Read(error)),
            Ok(Some(Ok(chunk))) => chunk,
        };
        wire += chunk.len();
        if wire > limit {
            return Err(BodyError::TooLarge { decoded: false });
        }
        match &mut decoder {
            None => sink.push(&chunk).await?,
            Some(decoder) => sink.inflate(decoder, &chunk).await?,
        }
    }
    if let Some(decoder) = &decoder {
        decoder.finish().map_err(BodyError::Corrupt)?;
    }
    Ok(sink.into_body())
}

/// The buffer a body is read into. `bytes` is zeroed once as it grows, so a decoder can
/// write into it directly without clearing memory for every chunk (a sender of one-byte
/// chunks would otherwise cost a clear of a whole step each); its length is what the body
/// holds of the budget, `filled` how much of it is body.
struct Sink {
    bytes: Vec<u8>,
    filled: usize,
    budget: BodyBudget,
    limit: usize,
    /// The most the buffer may need.
    ceiling: usize,
    deadline: Instant,
}

impl Sink {
    /// Room for `wanted` more bytes, taking the budget for it first (waiting until the
    /// deadline for it).
    async fn make_room(&mut self, wanted: usize) -> Result<(), BodyError> {
        let needed = self.filled + wanted;
        let held = self.bytes.len();
        if needed <= held {
            return Ok(());
        }
        let target = (held * 2).max(FIRST_BUFFER).min(self.ceiling).max(needed);
        if !self.budget.take(target - held, self.deadline).await {
            return Err(BodyError::NoBudget);
        }
        self.bytes.reserve_exact(target - held);
        self.bytes.resize(target, 0);
        Ok(())
    }

    async fn push(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        self.make_room(chunk.len()).await?;
        self.bytes[self.filled..self.filled + chunk.len()].copy_from_slice(chunk);
        self.filled += chunk.len();
        Ok(())
    }

    /// Decodes `input` into the buffer, never holding more than the limit: at the limit,
    /// one byte more of output means the body is too large.
    async fn inflate(&mut self, decoder: &mut Decoder, mut input: &[u8]) -> Result<(), BodyError> {
        loop {
            let room = self.limit - self.filled;
            if room == 0 {
                let mut probe = [0u8; 1];
                let produced = decoder
                    .decode(&mut input, &mut probe)
                    .map_err(BodyError::Corrupt)?;
                return if produced > 0 {
                    Err(BodyError::TooLarge { decoded: true })
                } else {
                    Ok(())
                };
            }
            // Full: grow it (by doubling), so a decoder never writes past what the budget
            // holds for this body.
            if self.bytes.len() == self.filled {
                self.make_room(room.min(FIRST_BUFFER)).await?;
            }
            let end = self.bytes.len().min(self.limit);
            let given = end - self.filled;
            let produced = decoder
                .decode(&mut input, &mut self.bytes[self.filled..end])
                .map_err(BodyError::Corrupt)?;
            self.filled += produced;
            // Short of the room it had: the decoder took all the input and has nothing
            // pending.
            if produced < given {
                return Ok(());
            }
        }
    }

    fn into_body(mut self) -> Body {
        self.bytes.truncate(self.filled);
        Body {
            bytes: self.bytes,
            _budget: self.budget,
        }
    }
}

/// A gzip (RFC 1952, members one after another) or zlib (RFC 1950: HTTP's `deflate`)
/// stream decoded incrementally, a chunk at a time as it arrives.
struct Decoder {
    gzip: bool,
    stage: Stage,
    /// gzip members decoded whole.
    members: usize,
}

enum Stage {
    /// gzip: the bytes of a member's header so far.
    Header(Vec<u8>),
    Inflate(Box<Decompress>, Crc),
    /// gzip: the bytes of a member's trailer (CRC32 and size) so far.
    Trailer(Vec<u8>, Crc),
    /// After a zlib stream, or after a gzip member (another may follow).
    Done,
}

impl Decoder {
    fn gzip() -> Decoder {
        Decoder {
            gzip: true,
            stage: Stage::Header(Vec::new()),
            members: 0,
        }
    }

    fn zlib() -> Decoder {
        Decoder {
            gzip: false,
            stage: Stage::Inflate(Box::new(Decompress::new(true)), Crc::new()),
            members: 0,
        }
    }

    fn name(&self) -> &'static str {
        if self.gzip {
            "gzip"
        } else {
            "deflate"
        }
    }

    /// Decodes from `input` into `out`, consuming input as it goes; returns how much of
    /// `out` it filled. It stops early only when `out` is full: otherwise all the input
    /// was used and nothing more can come out without more.
    fn decode(&mut self, input: &mut &[u8], out: &mut [u8]) -> Result<usize, String> {
        let mut produced = 0;
        loop {
            match &mut self.stage {
                Stage::Header(header) => {
                    if input.is_empty() {
                        return Ok(produced);
                    }
                    let before = header.len();
                    let take = input.len().min(MAX_GZIP_HEADER + 1 - before);
                    header.extend_from_slice(&input[..take]);
                    match gzip_header_length(header, self.members)? {
                        Some(length) => {
                            *input = &input[length - before..];
                            self.stage = Stage::Inflate(Box::new(Decompress::new(false)), Crc::new());
                        }
                        None if header.len() > MAX_GZIP_HEADER => {
                            return Err(format!(
                                "the gzip header is longer than {MAX_GZIP_HEADER} bytes \
                                 (file name, comment or extra fields); compress without them"
                            ))
                        }
                        None => *input = &input[take..],
                    }
                }
                Stage::Inflate(inflater, crc) => {
                    if produced == out.len() {
                        return Ok(produced);
                    }
                    let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
                    let status = inflater
                        .decompress(input, &mut out[produced..], FlushDecompress::None)
                        .map_err(|error| self_corrupt(self.gzip, &error.to_string()))?;
                    let consumed = (inflater.total_in() - before_in) as usize;
                    let made = (inflater.total_out() - before_out) as usize;
                    crc.update(&out[produced..produced + made]);
                    *input = &input[consumed..];
                    produced += made;
                    match status {
                        Status::StreamEnd if self.gzip => {
                            let crc = std::mem::replace(crc, Crc::new());
                            self.stage = Stage::Trailer(Vec::with_capacity(8), crc);
                        }
                        Status::StreamEnd => self.stage = Stage::Done,
                        Status::Ok | Status::BufError if consumed == 0 && made == 0 => {
                            if input.is_empty() || produced == out.len() {
                                return Ok(produced);
                            }
                            return Err(self_corrupt(self.gzip, "no progress"));
                        }
                        Status::Ok | Status::BufError => {}
                    }
                }
                Stage::Trailer(trailer, crc) => {
                    if input.is_empty() {
                        return Ok(produced);
                    }
                    let take = input.len().min(8 - trailer.len());
                    trailer.extend_from_slice(&input[..take]);
                    *input = &input[take..];
                    if trailer.len() == 8 {
                        let sum = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
                        let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
                        if sum != crc.sum() || size != crc.amount() {
                            return Err("the gzip body's checksum does not match what it decodes to \
                                 (corrupted on the way); send it again"
                                .into());
                        }
                        self.members += 1;
                        self.stage = Stage::Done;
                    }
                }
                Stage::Done => {
                    if input.is_empty() {
                        return Ok(produced);
                    }
                    if !self.gzip {
                        return Err("bytes follow the end of the deflate stream; send one stream".into());
                    }
                    self.stage = Stage::Header(Vec::new());
                }
            }
        }
    }

    /// At the end of the body: a stream cut short is an error, not a shorter body.
    fn finish(&self) -> Result<(), String> {
        match &self.stage {
            Stage::Done => Ok(()),
            Stage::Header(header) if header.is_empty() && self.members > 0 => Ok(()),
            _ => Err(format!(
                "the {} body is truncated: it ends before its compressed stream does; send it whole",
                self.name()
            )),
        }
    }
}

fn self_corrupt(gzip: bool, why: &str) -> String {
    if gzip {
        format!("the gzip body is corrupt ({why}); send it again")
    } else {
        format!("the deflate body is not a valid zlib stream (RFC 1950), as HTTP's deflate must be ({why})")
    }
}

const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;

/// The length of the gzip member header at the start of `bytes`, `None` while incomplete.
fn gzip_header_length(bytes: &[u8], members: usize) -> Result<Option<usize>, String> {
    let magic = [0x1f, 0x8b];
    if bytes.iter().zip(magic).any(|(byte, expected)| *byte != expected) {
        return Err(if members == 0 {
            "the body is not gzip although Content-Encoding says so (it does not start with \
             1f 8b); send it compressed or without Content-Encoding"
                .into()
        } else {
            "bytes follow the end of the gzip stream; send one stream".into()
        });
    }
    if bytes.len() < 10 {
        return Ok(None);
    }
    if bytes[2] != 8 {
        return Err(format!(
            "the gzip body uses compression method {}, not deflate (8)",
            bytes[2]
        ));
    }
    let flags = bytes[3];
    if flags & 0xe0 != 0 {
        return Err("the gzip header has reserved flags set; send it again".into());
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let Some(length) = bytes.get(at..at + 2) else {
            return Ok(None);
        };
        at += 2 + usize::from(u16::from_le_bytes([length[0], length[1]]));
    }
    for field in [FNAME, FCOMMENT] {
        if flags & field != 0 {
            let Some(rest) = bytes.get(at..) else {
                return Ok(None);
            };
            let Some(end) = rest.iter().position(|&byte| byte == 0) else {
                return Ok(None);
            };
            at += end + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    Ok((bytes.len() >= at).then_some(at))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;
    use std::time::Duration;

    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use tokio::sync::Semaphore;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// `bytes` as a payload of `chunk`-byte pieces.
    fn chunks(bytes: &[u8], chunk: usize) -> impl Stream<Item = Result<Bytes, PayloadError>> + Unpin {
        let pieces: Vec<_> = bytes
            .chunks(chunk.max(1))
            .map(|piece| Ok(Bytes::copy_from_slice(piece)))
            .collect();
        futures_util::stream::iter(pieces)
    }

    async fn read_with(
        bytes: &[u8],
        chunk: usize,
        coding: Coding,
        limit: usize,
        budget: &Arc<Semaphore>,
    ) -> Result<Vec<u8>, BodyError> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let body = read(
            chunks(bytes, chunk),
            coding,
            limit,
            None,
            BodyBudget::new(budget.clone()),
            deadline,
        )
        .await?;
        Ok(body.bytes().to_vec())
    }

    #[tokio::test]
    async fn compressed_bodies_decode_whatever_their_chunking() {
        let text: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_string().into_bytes()).collect();
        let budget = Arc::new(Semaphore::new(1 << 20));
        for chunk in [1, 7, 1000, 1 << 20] {
            for (coding, encoded) in [
                (Coding::Gzip, gzip(&text)),
                (Coding::Deflate, zlib(&text)),
                (Coding::Identity, text.clone()),
            ] {
                let decoded = read_with(&encoded, chunk, coding, 1 << 20, &budget)
                    .await
                    .unwrap();
                assert!(decoded == text, "{coding:?} in chunks of {chunk}");
            }
        }
        assert_eq!(budget.available_permits(), 1 << 20, "all given back");
    }

    #[tokio::test]
    async fn a_body_of_exactly_the_limit_decodes_and_one_byte_more_does_not() {
        let budget = Arc::new(Semaphore::new(1 << 20));
        let text = vec![b'x'; 10_000];
        for coding in [Coding::Gzip, Coding::Deflate] {
            let encoded = if coding == Coding::Gzip {
                gzip(&text)
            } else {
                zlib(&text)
            };
            assert_eq!(
                read_with(&encoded, 100, coding, 10_000, &budget)
                    .await
                    .unwrap()
                    .len(),
                10_000
            );
            assert!(matches!(
                read_with(&encoded, 100, coding, 9_999, &budget).await,
                Err(BodyError::TooLarge { decoded: true })
            ));
        }
    }

    #[tokio::test]
    async fn a_zip_bomb_inflates_no_more_than_the_limit() {
        let limit = 4 * 1024 * 1024;
        let bomb = gzip(&vec![0u8; 10 * 1000 * 1000]);
        // A budget of exactly the limit: holding one byte more would end in NoBudget.
        let budget = Arc::new(Semaphore::new(limit));
        for chunk in [bomb.len(), 16 * 1024, 1] {
            let deadline = Instant::now() + Duration::from_secs(5);
            let body_budget = BodyBudget::new(budget.clone());
            let fed = std::sync::atomic::AtomicUsize::new(0);
            let stream = chunks(&bomb, chunk).inspect(|piece| {
                if let Ok(piece) = piece {
                    fed.fetch_add(piece.len(), std::sync::atomic::Ordering::Relaxed);
                }
            });
            let result = read(stream, Coding::Gzip, limit, None, body_budget, deadline).await;
            assert!(
                matches!(result, Err(BodyError::TooLarge { decoded: true })),
                "{:?}",
                result.err()
            );
            eprintln!(
                "zip bomb (10,000,000 zero bytes, {} gzipped) in chunks of {chunk}: refused after \
                 reading {} compressed bytes; at most {limit} decoded bytes held",
                bomb.len(),
                fed.load(std::sync::atomic::Ordering::Relaxed)
            );
            assert_eq!(budget.available_permits(), limit);
        }
    }

    #[tokio::test]
    async fn cut_or_damaged_streams_are_errors_not_shorter_bodies() {
        let budget = Arc::new(Semaphore::new(1 << 20));
        let text = b"{\"alerts\":[]}".repeat(100);
        let whole = gzip(&text);
        for cut in [0, 1, 5, 10, whole.len() / 2, whole.len() - 8, whole.len() - 1] {
            let result = read_with(&whole[..cut], 3, Coding::Gzip, 1 << 20, &budget).await;
            assert!(
                matches!(&result, Err(BodyError::Corrupt(why)) if why.contains("truncated")),
                "cut at {cut}: {result:?}"
            );
        }
        let whole = zlib(&text);
        for cut in [0, 1, whole.len() / 2, whole.len() - 1] {
            let result = read_with(&whole[..cut], 3, Coding::Deflate, 1 << 20, &budget).await;
            assert!(
                matches!(&result, Err(BodyError::Corrupt(why)) if why.contains("truncated")),
                "cut at {cut}: {result:?}"
            );
        }
        let mut flipped = gzip(&text);
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x55;
        assert!(matches!(
            read_with(&flipped, 64, Coding::Gzip, 1 << 20, &budget).await,
            Err(BodyError::Corrupt(_))
        ));
        for garbage in [&b"\x1f"[..], b"\x00\x00", b"\x1f\x8b\x09"] {
            let result = read_with(garbage, 1, Coding::Gzip, 1 << 20, &budget).await;
            assert!(
                matches!(result, Err(BodyError::Corrupt(_))),
                "{garbage:?}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn gzip_headers_with_optional_fields_split_anywhere_are_read() {
        let budget = Arc::new(Semaphore::new(1 << 20));
        let text = b"{\"alerts\":[]}".to_vec();
        let mut encoder = flate2::GzBuilder::new()
            .filename("alerts.json")
            .comment("a comment")
            .extra(vec![1, 2, 3, 4])
            .write(Vec::new(), Compression::best());
        encoder.write_all(&text).unwrap();
        let encoded = encoder.finish().unwrap();
        for chunk in [1, 2, 11, 13, 100] {
            assert_eq!(
                read_with(&encoded, chunk, Coding::Gzip, 1 << 20, &budget)
                    .await
                    .unwrap(),
                text,
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn encodings_are_read_from_the_header_case_insensitively() {
        use actix_web::test::TestRequest;
        let coding = |value: Option<&str>| {
            let mut request = TestRequest::default();
            if let Some(value) = value {
                request = request.insert_header((CONTENT_ENCODING, value));
            }
            Coding::of(&request.to_http_request())
        };
        assert_eq!(coding(None), Ok(Coding::Identity));
        assert_eq!(coding(Some("identity")), Ok(Coding::Identity));
        assert_eq!(coding(Some("GZip")), Ok(Coding::Gzip));
        assert_eq!(coding(Some("x-gzip")), Ok(Coding::Gzip));
        assert_eq!(coding(Some("identity, deflate")), Ok(Coding::Deflate));
        assert_eq!(coding(Some("br")), Err("br".into()));
        assert_eq!(coding(Some("gzip, gzip")), Err("gzip, gzip".into()));
    }
}
