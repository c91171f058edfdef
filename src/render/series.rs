//! Text and markdown for many alerts: a numbered series of messages `(1/3) …`, at most
//! `max_parts`, whatever still does not fit summarised at the end of the last one.

use std::ops::Range;

use super::fit::{cut_to_fit, fit_alerts, largest_fitting};

pub struct Series {
    pub texts: Vec<String>,
    /// Alerts shown in full across the series.
    pub shown: usize,
    pub cut: bool,
}

/// The line that ends a message when alerts were left out.
pub fn more_line(omitted: usize) -> String {
    let plural = if omitted == 1 { "" } else { "s" };
    format!("\n… and {omitted} more alert{plural}, see Alertmanager")
}

/// Splits `total` alerts into messages of at most `max_bytes`. `render(range)` renders the
/// message showing the alerts in `range`.
pub fn split<E>(
    total: usize,
    max_bytes: usize,
    max_parts: usize,
    mut render: impl FnMut(Range<usize>) -> Result<String, E>,
) -> Result<Series, E> {
    let single = fit_alerts(total, max_bytes, |k| render(0..k), more_line)?;
    if !single.cut || total <= 1 || max_parts <= 1 {
        return Ok(Series {
            texts: vec![single.text],
            shown: single.shown,
            cut: single.cut,
        });
    }
    // Room for the longest `(i/n) ` prefix of this series (found by fuzzing: a fixed 10
    // bytes overflowed with 1,000 or more parts).
    let prefix = format!("({max_parts}/{max_parts}) ").len();
    let room = max_bytes.saturating_sub(prefix);
    let mut texts = Vec::new();
    let (mut start, mut shown, mut cut) = (0, 0, false);
    while start < total {
        let left = total - start;
        if texts.len() + 1 == max_parts {
            let fitted = fit_alerts(left, room, |k| render(start..start + k), more_line)?;
            shown += fitted.shown;
            cut |= fitted.cut;
            texts.push(fitted.text);
            break;
        }
        let best = largest_fitting(left, |k| {
            let text = render(start..start + k)?;
            Ok((text.len() <= room).then_some(text))
        })?;
        let (k, text) = match best {
            Some(found) => found,
            None => {
                // One alert alone is too long: cut it.
                cut = true;
                (1, cut_to_fit(&render(start..start + 1)?, room).0)
            }
        };
        texts.push(text);
        start += k;
        shown += k;
    }
    let count = texts.len();
    if count > 1 {
        for (i, text) in texts.iter_mut().enumerate() {
            *text = format!("({}/{count}) {text}", i + 1);
        }
    }
    Ok(Series { texts, shown, cut })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    fn lines(range: Range<usize>) -> Result<String, Infallible> {
        Ok(range
            .map(|i| format!("alert {i:03} is firing\n"))
            .collect::<String>()
            .trim()
            .to_string())
    }

    #[test]
    fn what_fits_stays_one_message() {
        let series = split(3, 2048, 3, lines).unwrap();
        assert_eq!(series.texts.len(), 1);
        assert!(!series.texts[0].starts_with("(1/"));
        assert_eq!(series.shown, 3);
        assert!(!series.cut);
    }

    #[test]
    fn many_alerts_become_a_numbered_series_that_shows_every_alert_once() {
        // 100 lines of 20 bytes: about 2000 bytes, so two messages of 500 bytes will not do.
        let series = split(100, 500, 10, lines).unwrap();
        assert!(series.texts.len() > 1 && series.texts.len() <= 10);
        assert_eq!(series.shown, 100);
        let n = series.texts.len();
        for (i, text) in series.texts.iter().enumerate() {
            assert!(text.len() <= 500, "{} bytes", text.len());
            assert!(text.starts_with(&format!("({}/{n}) ", i + 1)), "{text}");
        }
        let all: String = series.texts.join("\n");
        for i in 0..100 {
            assert_eq!(
                all.matches(&format!("alert {i:03} ")).count(),
                1,
                "alert {i} once"
            );
        }
    }

    #[test]
    fn never_more_messages_than_the_maximum_and_the_rest_is_summarised() {
        let series = split(500, 500, 3, lines).unwrap();
        assert_eq!(series.texts.len(), 3);
        assert!(series.cut);
        let last = series.texts.last().unwrap();
        assert!(last.starts_with("(3/3) "));
        assert!(
            last.ends_with(&format!(
                "… and {} more alerts, see Alertmanager",
                500 - series.shown
            )),
            "{last}"
        );
        assert!(series.texts.iter().all(|t| t.len() <= 500));
    }

    #[test]
    fn with_a_maximum_of_one_the_message_summarises() {
        let series = split(500, 500, 1, lines).unwrap();
        assert_eq!(series.texts.len(), 1);
        assert!(series.texts[0].contains("more alerts"));
    }
}
