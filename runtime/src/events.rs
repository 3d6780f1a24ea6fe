//! Event names and the `*`/`**` patterns plugins subscribe with, and how patterns match names.

use std::fmt;

use crate::error::{Error, Result};

/// Separates the segments of an event name.
const SEGMENT_SEPARATOR: char = ':';

/// The longest event name or pattern, in bytes. It keeps names cheap to copy into every delivery
/// and bounds the work of one match.
const EVENT_NAME_LIMIT: usize = 255;

/// Matches exactly one segment.
const ONE_SEGMENT: &str = "*";

/// As the last segment, matches one or more segments.
const ANY_REST: &str = "**";

/// Which of a plugin's listeners hear an event in a cluster (`PLUGIN_API.md`, "Events in a
/// cluster"). On a single node every event is local and reaches both kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ListenerReach {
    /// The plugin hears each event once in the cluster, on one of its nodes (the default).
    #[default]
    OncePerPlugin,
    /// The plugin hears each event on every node (`{ everyNode: true }`).
    EveryNode,
}

/// Runs its action once, when dropped. An event received from another node carries one: the
/// event's last holder lets go of it when every local listener has been handed it, and the
/// action then marks it handled (so its Kafka offset may be committed).
pub struct DeliveryReceipt(Option<Box<dyn FnOnce() + Send + Sync>>);

impl DeliveryReceipt {
    /// A receipt that runs `on_handled` when dropped.
    pub fn new(on_handled: impl FnOnce() + Send + Sync + 'static) -> Self {
        DeliveryReceipt(Some(Box::new(on_handled)))
    }
}

impl Drop for DeliveryReceipt {
    fn drop(&mut self) {
        if let Some(on_handled) = self.0.take() {
            on_handled();
        }
    }
}

impl fmt::Debug for DeliveryReceipt {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("DeliveryReceipt")
    }
}

/// Checks an event name: one or more `:`-separated segments, each non-empty and made of any
/// characters except `:`, `*` and whitespace, at most 255 bytes in all.
pub fn validate_event_name(name: &str) -> Result<()> {
    check_length("event name", name)?;
    for segment in name.split(SEGMENT_SEPARATOR) {
        check_plain_segment("event name", name, segment)?;
    }
    Ok(())
}

fn check_length(what: &str, text: &str) -> Result<()> {
    if text.is_empty() {
        return Err(Error::InvalidEvent {
            reason: format!("{what} must not be empty"),
        });
    }
    if text.len() > EVENT_NAME_LIMIT {
        return Err(Error::InvalidEvent {
            reason: format!(
                "{what} '{text}' is {} bytes, over the {EVENT_NAME_LIMIT}-byte limit",
                text.len()
            ),
        });
    }
    Ok(())
}

/// A segment of a name, or a non-wildcard segment of a pattern.
fn check_plain_segment(what: &str, text: &str, segment: &str) -> Result<()> {
    if segment.is_empty() {
        return Err(Error::InvalidEvent {
            reason: format!("{what} '{text}' has an empty segment (segments are separated by ':')"),
        });
    }
    if segment.contains('*') {
        let rule = if what == "event name" {
            "must not contain '*'"
        } else {
            "may use '*' only as a whole segment"
        };
        return Err(Error::InvalidEvent {
            reason: format!("{what} '{text}' {rule}"),
        });
    }
    if segment.chars().any(char::is_whitespace) {
        return Err(Error::InvalidEvent {
            reason: format!("{what} '{text}' must not contain whitespace"),
        });
    }
    Ok(())
}

/// How a pattern matches, decided once at parse time so that matching does no analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PatternShape {
    /// No wildcard: the pattern is an event name and matches only itself.
    Exact,
    /// Wildcards, without a trailing `**`: the event must have exactly as many segments.
    FixedSegments,
    /// Ends with `**`: the event must have the fixed segments and at least one more.
    OpenEnded,
}

/// An event name, or a glob over `:`-separated segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventPattern {
    text: String,
    shape: PatternShape,
}

impl EventPattern {
    /// Parses a pattern: an event name, or a glob over segments where `*` as a whole segment
    /// matches exactly one segment (`data:*` matches `data:processed`, not `data:a:b` nor `data`)
    /// and `**` as the last segment matches one or more remaining segments (`data:**` matches
    /// `data:a` and `data:a:b`, not `data`); `**` alone matches every event. `**` anywhere else,
    /// or `*` inside a segment (`da*ta`), is [`Error::InvalidEvent`].
    pub fn parse(text: &str) -> Result<Self> {
        check_length("event pattern", text)?;
        let mut has_wildcard = false;
        let mut open_ended = false;
        let mut segments = text.split(SEGMENT_SEPARATOR).peekable();
        while let Some(segment) = segments.next() {
            match segment {
                ONE_SEGMENT => has_wildcard = true,
                ANY_REST if segments.peek().is_none() => {
                    has_wildcard = true;
                    open_ended = true;
                }
                ANY_REST => {
                    return Err(Error::InvalidEvent {
                        reason: format!(
                            "event pattern '{text}' may use '**' only as the last segment"
                        ),
                    })
                }
                plain => check_plain_segment("event pattern", text, plain)?,
            }
        }
        let shape = match (has_wildcard, open_ended) {
            (false, _) => PatternShape::Exact,
            (true, false) => PatternShape::FixedSegments,
            (true, true) => PatternShape::OpenEnded,
        };
        Ok(EventPattern {
            text: text.to_string(),
            shape,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has no wildcard, so that it matches one event name only (a broker can
    /// index such subscriptions by name).
    pub fn is_exact(&self) -> bool {
        self.shape == PatternShape::Exact
    }

    /// Whether `event_name` matches. Walks both strings segment by segment with borrowed slices
    /// and allocates nothing, because it runs for every event and every subscription.
    pub fn matches(&self, event_name: &str) -> bool {
        if self.shape == PatternShape::Exact {
            return self.text == event_name;
        }
        let mut pattern_segments = self.text.split(SEGMENT_SEPARATOR);
        let mut event_segments = event_name.split(SEGMENT_SEPARATOR);
        loop {
            match (pattern_segments.next(), event_segments.next()) {
                (None, None) => return true,
                // Parsing put `**` last, and it needs at least this one segment.
                (Some(ANY_REST), Some(_)) if self.shape == PatternShape::OpenEnded => return true,
                (Some(ONE_SEGMENT), Some(_)) => {}
                (Some(pattern_segment), Some(event_segment)) => {
                    if pattern_segment != event_segment {
                        return false;
                    }
                }
                (None, Some(_)) | (Some(_), None) => return false,
            }
        }
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_reason(result: Result<impl fmt::Debug>) -> String {
        match result {
            Err(Error::InvalidEvent { reason }) => reason,
            other => panic!("expected an invalid event error, got {other:?}"),
        }
    }

    fn pattern(text: &str) -> EventPattern {
        EventPattern::parse(text).expect("test patterns are valid")
    }

    #[test]
    fn event_names_with_any_non_reserved_characters_pass() {
        for name in [
            "user",
            "user:created",
            "a:b:c:d",
            "plugin:loaded",
            "Ünïcode:é",
            "x-1_2.3",
        ] {
            assert_eq!(validate_event_name(name), Ok(()), "{name}");
        }
        assert_eq!(validate_event_name(&"e".repeat(255)), Ok(()));
    }

    #[test]
    fn event_names_breaking_a_rule_name_that_rule() {
        assert!(event_reason(validate_event_name("")).contains("must not be empty"));
        assert!(
            event_reason(validate_event_name(&"e".repeat(256))).contains("over the 255-byte limit")
        );
        // The limit is in bytes: 128 two-byte characters are 256 bytes.
        assert!(event_reason(validate_event_name(&"é".repeat(128))).contains("256 bytes"));
        for name in [":", "a:", ":a", "a::b"] {
            assert!(
                event_reason(validate_event_name(name)).contains("empty segment"),
                "{name}"
            );
        }
        for name in ["a*", "a:*", "**", "a:**"] {
            assert!(
                event_reason(validate_event_name(name)).contains("must not contain '*'"),
                "{name}"
            );
        }
        for name in ["user created", "a:\tb", "a\n"] {
            assert!(
                event_reason(validate_event_name(name)).contains("whitespace"),
                "{name}"
            );
        }
    }

    #[test]
    fn exact_patterns_match_only_their_name() {
        let exact = pattern("user:created");
        assert!(exact.is_exact());
        assert_eq!(exact.as_str(), "user:created");
        assert_eq!(exact.to_string(), "user:created");
        assert!(exact.matches("user:created"));
        assert!(!exact.matches("user:created:now"));
        assert!(!exact.matches("user"));
        assert!(!exact.matches("user:deleted"));
    }

    #[test]
    fn a_single_star_matches_exactly_one_segment() {
        let one = pattern("data:*");
        assert!(!one.is_exact());
        assert!(one.matches("data:processed"));
        assert!(!one.matches("data:a:b"));
        assert!(!one.matches("data"));
        assert!(!one.matches("other:processed"));
        let middle = pattern("a:*:c");
        assert!(middle.matches("a:b:c"));
        assert!(!middle.matches("a:b:d"));
        assert!(!middle.matches("a:c"));
        let alone = pattern("*");
        assert!(alone.matches("anything"));
        assert!(!alone.matches("two:segments"));
    }

    #[test]
    fn a_trailing_double_star_matches_one_or_more_segments() {
        let rest = pattern("data:**");
        assert!(!rest.is_exact());
        assert!(rest.matches("data:a"));
        assert!(rest.matches("data:a:b"));
        assert!(!rest.matches("data"));
        assert!(!rest.matches("other:a"));
        let mixed = pattern("*:x:**");
        assert!(mixed.matches("a:x:b"));
        assert!(mixed.matches("a:x:b:c"));
        assert!(!mixed.matches("a:x"));
        assert!(!mixed.matches("a:y:b"));
    }

    #[test]
    fn a_lone_double_star_matches_every_event() {
        let everything = pattern("**");
        for name in ["a", "a:b", "plugin:loaded", "x:y:z:w"] {
            assert!(everything.matches(name), "{name}");
        }
    }

    #[test]
    fn misplaced_wildcards_are_refused() {
        assert!(event_reason(EventPattern::parse("**:a")).contains("'**' only as the last segment"));
        assert!(
            event_reason(EventPattern::parse("a:**:b")).contains("'**' only as the last segment")
        );
        for text in ["da*ta", "data:*x", "***", "a:x**"] {
            assert!(
                event_reason(EventPattern::parse(text)).contains("'*' only as a whole segment"),
                "{text}"
            );
        }
    }

    #[test]
    fn patterns_follow_the_name_rules_for_plain_segments() {
        assert!(event_reason(EventPattern::parse("")).contains("must not be empty"));
        assert!(event_reason(EventPattern::parse("a::*")).contains("empty segment"));
        assert!(event_reason(EventPattern::parse("a:*:")).contains("empty segment"));
        assert!(event_reason(EventPattern::parse("a b:*")).contains("whitespace"));
        assert!(
            event_reason(EventPattern::parse(&format!("{}:**", "e".repeat(253))))
                .contains("255-byte limit")
        );
        assert!(EventPattern::parse(&format!("{}:**", "e".repeat(252))).is_ok());
    }

    #[test]
    fn patterns_compare_by_text() {
        assert_eq!(pattern("a:*"), pattern("a:*"));
        assert_ne!(pattern("a:*"), pattern("a:**"));
    }
}
