//! Fitting rendered text into WeCom's size limits. Limits are in UTF-8 bytes; a cut never
//! splits a character and always leaves a visible marker.

use crate::config::MsgType;

/// What a target takes in the `content` of its text-like msgtypes, in UTF-8 bytes. Each
/// delivery target states its own (`deliver::app`, `deliver::robot`, `deliver::appchat`);
/// cards are the same wherever they go, so their limits are the constants below
/// (docs/wecom-api.md#message-limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentLimits {
    pub text: usize,
    pub markdown: usize,
    /// 0 where the target has no `markdown_v2`.
    pub markdown_v2: usize,
}

impl ContentLimits {
    /// The limit of a text-like msgtype's `content`.
    pub fn max_bytes(&self, msgtype: MsgType) -> usize {
        match msgtype {
            MsgType::Markdown => self.markdown,
            MsgType::MarkdownV2 => self.markdown_v2,
            _ => self.text,
        }
    }
}

pub const TEXTCARD_TITLE_MAX_BYTES: usize = 128;
pub const TEXTCARD_DESCRIPTION_MAX_BYTES: usize = 512;
/// The send page says 2048 bytes, the error code list (40039) 1024: the stricter reading
/// (docs/wecom-api.md#message-limits).
pub const TEXTCARD_URL_MAX_BYTES: usize = 1024;
pub const TEXTCARD_BTNTXT_MAX_CHARS: usize = 4;

/// Appended where text was cut.
pub const CUT_MARKER: &str = "…";

/// The longest prefix of `text` that is at most `max_bytes` long and ends on a character
/// boundary.
pub fn prefix_within(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` unchanged if it fits, else cut to fit with [`CUT_MARKER`] at the end.
/// Returns whether it was cut.
pub fn cut_to_fit(text: &str, max_bytes: usize) -> (String, bool) {
    if text.len() <= max_bytes {
        return (text.to_string(), false);
    }
    let room = max_bytes.saturating_sub(CUT_MARKER.len());
    let mut cut = prefix_within(text, room).trim_end().to_string();
    cut.push_str(CUT_MARKER);
    (cut, true)
}

/// The result of fitting a message that lists alerts.
#[derive(Debug, PartialEq, Eq)]
pub struct Fitted {
    pub text: String,
    /// How many alerts the text shows (the rest are summarised by the marker).
    pub shown: usize,
    /// Whether anything was left out or cut.
    pub cut: bool,
}

/// Fits a message listing `total` alerts into `max_bytes`. `render(k)` renders the message
/// with the first `k` alerts; `more(n)` is the line that says `n` alerts were left out.
/// Whole alerts are dropped first (so the reader gets "… and 37 more alerts" rather than a
/// cut mid-line); only if a single alert does not fit is the text cut.
pub fn fit_alerts<E>(
    total: usize,
    max_bytes: usize,
    mut render: impl FnMut(usize) -> Result<String, E>,
    more: impl Fn(usize) -> String,
) -> Result<Fitted, E> {
    if total == 0 {
        let (text, cut) = cut_to_fit(&render(0)?, max_bytes);
        return Ok(Fitted { text, shown: 0, cut });
    }
    let with_marker = |text: String, omitted: usize| {
        if omitted == 0 {
            return text;
        }
        let mut text = text.trim_end().to_string();
        text.push_str(&more(omitted));
        text
    };
    let best = largest_fitting(total, |k| {
        let text = with_marker(render(k)?, total - k);
        Ok((text.len() <= max_bytes).then_some(text))
    })?;
    if let Some((shown, text)) = best {
        return Ok(Fitted {
            text,
            shown,
            cut: shown < total,
        });
    }
    // Even one alert is too long: cut it, keeping the marker for the rest.
    let marker = if total > 1 { more(total - 1) } else { String::new() };
    let room = max_bytes.saturating_sub(marker.len());
    let (first, _) = cut_to_fit(render(1)?.trim_end(), room);
    let (text, _) = cut_to_fit(&(first + &marker), max_bytes);
    Ok(Fitted {
        text,
        shown: 1,
        cut: true,
    })
}

/// The largest `k` in `1..=total` for which `attempt(k)` gives a value, assuming that
/// whatever fits with `k` alerts also fits with fewer. Gallops up from 1 before bisecting,
/// so when only a few alerts fit, only small messages are ever rendered — a group of 1,000
/// alerts costs a handful of small renders, not many full ones.
pub fn largest_fitting<T, E>(
    total: usize,
    mut attempt: impl FnMut(usize) -> Result<Option<T>, E>,
) -> Result<Option<(usize, T)>, E> {
    let Some(first) = attempt(1)? else {
        return Ok(None);
    };
    let mut best = (1, first);
    let mut too_many = None;
    while too_many.is_none() && best.0 < total {
        let next = (best.0 * 2).min(total);
        match attempt(next)? {
            Some(value) => best = (next, value),
            None => too_many = Some(next),
        }
    }
    if let Some(too_many) = too_many {
        let (mut low, mut high) = (best.0 + 1, too_many - 1);
        while low <= high {
            let mid = low + (high - low) / 2;
            match attempt(mid)? {
                Some(value) => {
                    best = (mid, value);
                    low = mid + 1;
                }
                None => high = mid - 1,
            }
        }
    }
    Ok(Some(best))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[test]
    fn a_cut_never_splits_a_chinese_character() {
        let text = "数据库连接数过高".repeat(100); // 3 bytes a character
        for max in [10, 11, 12, 100, 2048] {
            let (cut, was_cut) = cut_to_fit(&text, max);
            assert!(was_cut);
            assert!(cut.len() <= max, "{} > {max}", cut.len());
            assert!(cut.ends_with(CUT_MARKER));
            assert!(std::str::from_utf8(cut.as_bytes()).is_ok());
        }
    }

    #[test]
    fn the_search_finds_the_largest_count_that_fits_with_few_attempts() {
        for (total, limit) in [(1000, 7), (1000, 1000), (5, 3), (1, 1), (1000, 999), (64, 32)] {
            let mut attempts = 0;
            let found = largest_fitting(total, |k| -> Result<Option<usize>, Infallible> {
                attempts += 1;
                Ok((k <= limit).then_some(k))
            })
            .unwrap();
            assert_eq!(found.map(|(k, _)| k), Some(limit.min(total)), "{total} {limit}");
            assert!(
                attempts <= 2 * (usize::BITS - total.leading_zeros()) as usize + 1,
                "{attempts} attempts"
            );
        }
        let none = largest_fitting(10, |_| -> Result<Option<()>, Infallible> { Ok(None) }).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn text_that_fits_is_left_alone() {
        assert_eq!(cut_to_fit("short", 5), ("short".to_string(), false));
        assert_eq!(prefix_within("é", 1), "");
    }

    fn render_lines(k: usize) -> Result<String, Infallible> {
        Ok((0..k).map(|i| format!("alert number {i}\n")).collect())
    }

    #[test]
    fn whole_alerts_are_dropped_before_anything_is_cut() {
        let more = |n: usize| format!("\n… and {n} more alerts");
        let fitted = fit_alerts(100, 200, render_lines, more).unwrap();
        assert!(fitted.text.len() <= 200);
        assert!(fitted.cut);
        assert!(fitted.shown > 1 && fitted.shown < 100);
        assert!(fitted
            .text
            .ends_with(&format!("… and {} more alerts", 100 - fitted.shown)));
        // the shown alerts are complete lines
        assert!(fitted
            .text
            .contains(&format!("alert number {}\n", fitted.shown - 1)));
        // and one more would not have fit
        let one_more = render_lines(fitted.shown + 1).unwrap() + &more(100 - fitted.shown - 1);
        assert!(one_more.len() > 200);
    }

    #[test]
    fn a_message_that_fits_is_not_touched() {
        let fitted = fit_alerts(3, 2048, render_lines, |n| format!("+{n}")).unwrap();
        assert_eq!(
            fitted,
            Fitted {
                text: render_lines(3).unwrap(),
                shown: 3,
                cut: false
            }
        );
    }

    #[test]
    fn a_single_huge_alert_is_cut_and_the_rest_still_counted() {
        let render = |k: usize| -> Result<String, Infallible> { Ok("长".repeat(1000 * k)) };
        let fitted = fit_alerts(5, 512, render, |n| format!("\n… and {n} more alerts")).unwrap();
        assert!(fitted.text.len() <= 512);
        assert!(fitted.text.ends_with("… and 4 more alerts"));
        assert!(fitted.text.contains(CUT_MARKER));
        assert_eq!(fitted.shown, 1);
    }
}
