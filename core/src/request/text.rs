//! Characters that have no place in a request: control characters, invisible
//! and direction-changing ones anywhere, anything but ASCII in names. Named
//! the way Unicode names them, so a requester can find a look-alike they
//! pasted without knowing it was there.

/// Why a character is refused everywhere, even in the free `Why` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hidden {
    /// C0/C1 controls and DEL, other than newline, carriage return and tab.
    Control,
    /// Zero-width and other invisible characters: two texts that look the
    /// same would differ.
    Invisible,
    /// Bidirectional controls: they reorder what a reviewer sees ("Trojan
    /// Source", CVE-2021-42574).
    Bidi,
}

impl Hidden {
    pub(crate) fn what(self) -> &'static str {
        match self {
            Hidden::Control => "a control character",
            Hidden::Invisible => "an invisible character",
            Hidden::Bidi => {
                "a text-direction control (it can make text show differently from what it is)"
            }
        }
    }
}

pub(crate) fn hidden(c: char) -> Option<Hidden> {
    match c {
        '\n' | '\r' | '\t' => None,
        c if c.is_control() => Some(Hidden::Control),
        '\u{200B}'..='\u{200D}'
        | '\u{2060}'..='\u{2064}'
        | '\u{FEFF}'
        | '\u{00AD}'
        | '\u{180E}'
        | '\u{034F}' => Some(Hidden::Invisible),
        '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{061C}' => Some(Hidden::Bidi),
        _ => None,
    }
}

/// Names of the characters people paste by accident or on purpose, and the
/// ASCII they pass for. Not all of Unicode: the rest is shown by code point.
const NAMES: &[(char, &str, &str)] = &[
    ('\u{0000}', "NULL", ""),
    ('\u{001B}', "ESCAPE", ""),
    ('\u{007F}', "DELETE", ""),
    ('\u{00A0}', "NO-BREAK SPACE", " "),
    ('\u{00AD}', "SOFT HYPHEN", ""),
    ('\u{0131}', "LATIN SMALL LETTER DOTLESS I", "i"),
    ('\u{034F}', "COMBINING GRAPHEME JOINER", ""),
    ('\u{0391}', "GREEK CAPITAL LETTER ALPHA", "A"),
    ('\u{0392}', "GREEK CAPITAL LETTER BETA", "B"),
    ('\u{0395}', "GREEK CAPITAL LETTER EPSILON", "E"),
    ('\u{039F}', "GREEK CAPITAL LETTER OMICRON", "O"),
    ('\u{03B1}', "GREEK SMALL LETTER ALPHA", "a"),
    ('\u{03B9}', "GREEK SMALL LETTER IOTA", "i"),
    ('\u{03BA}', "GREEK SMALL LETTER KAPPA", "k"),
    ('\u{03BD}', "GREEK SMALL LETTER NU", "v"),
    ('\u{03BF}', "GREEK SMALL LETTER OMICRON", "o"),
    ('\u{03C1}', "GREEK SMALL LETTER RHO", "p"),
    ('\u{03C5}', "GREEK SMALL LETTER UPSILON", "u"),
    ('\u{0405}', "CYRILLIC CAPITAL LETTER DZE", "S"),
    (
        '\u{0406}',
        "CYRILLIC CAPITAL LETTER BYELORUSSIAN-UKRAINIAN I",
        "I",
    ),
    ('\u{0408}', "CYRILLIC CAPITAL LETTER JE", "J"),
    ('\u{0410}', "CYRILLIC CAPITAL LETTER A", "A"),
    ('\u{0412}', "CYRILLIC CAPITAL LETTER VE", "B"),
    ('\u{0415}', "CYRILLIC CAPITAL LETTER IE", "E"),
    ('\u{041A}', "CYRILLIC CAPITAL LETTER KA", "K"),
    ('\u{041C}', "CYRILLIC CAPITAL LETTER EM", "M"),
    ('\u{041D}', "CYRILLIC CAPITAL LETTER EN", "H"),
    ('\u{041E}', "CYRILLIC CAPITAL LETTER O", "O"),
    ('\u{0420}', "CYRILLIC CAPITAL LETTER ER", "P"),
    ('\u{0421}', "CYRILLIC CAPITAL LETTER ES", "C"),
    ('\u{0422}', "CYRILLIC CAPITAL LETTER TE", "T"),
    ('\u{0425}', "CYRILLIC CAPITAL LETTER HA", "X"),
    ('\u{0430}', "CYRILLIC SMALL LETTER A", "a"),
    ('\u{0435}', "CYRILLIC SMALL LETTER IE", "e"),
    ('\u{043E}', "CYRILLIC SMALL LETTER O", "o"),
    ('\u{0440}', "CYRILLIC SMALL LETTER ER", "p"),
    ('\u{0441}', "CYRILLIC SMALL LETTER ES", "c"),
    ('\u{0443}', "CYRILLIC SMALL LETTER U", "y"),
    ('\u{0445}', "CYRILLIC SMALL LETTER HA", "x"),
    ('\u{0455}', "CYRILLIC SMALL LETTER DZE", "s"),
    (
        '\u{0456}',
        "CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I",
        "i",
    ),
    ('\u{0458}', "CYRILLIC SMALL LETTER JE", "j"),
    ('\u{0501}', "CYRILLIC SMALL LETTER KOMI DE", "d"),
    ('\u{051B}', "CYRILLIC SMALL LETTER QA", "q"),
    ('\u{051D}', "CYRILLIC SMALL LETTER WE", "w"),
    ('\u{0570}', "ARMENIAN SMALL LETTER HO", "h"),
    ('\u{0578}', "ARMENIAN SMALL LETTER VO", "n"),
    ('\u{057D}', "ARMENIAN SMALL LETTER SEH", "u"),
    ('\u{0585}', "ARMENIAN SMALL LETTER OH", "o"),
    ('\u{061C}', "ARABIC LETTER MARK", ""),
    ('\u{13A0}', "CHEROKEE LETTER A", "D"),
    ('\u{180E}', "MONGOLIAN VOWEL SEPARATOR", ""),
    ('\u{200B}', "ZERO WIDTH SPACE", ""),
    ('\u{200C}', "ZERO WIDTH NON-JOINER", ""),
    ('\u{200D}', "ZERO WIDTH JOINER", ""),
    ('\u{200E}', "LEFT-TO-RIGHT MARK", ""),
    ('\u{200F}', "RIGHT-TO-LEFT MARK", ""),
    ('\u{2010}', "HYPHEN", "-"),
    ('\u{2011}', "NON-BREAKING HYPHEN", "-"),
    ('\u{2012}', "FIGURE DASH", "-"),
    ('\u{2013}', "EN DASH", "-"),
    ('\u{2014}', "EM DASH", "-"),
    ('\u{2018}', "LEFT SINGLE QUOTATION MARK", "'"),
    ('\u{2019}', "RIGHT SINGLE QUOTATION MARK", "'"),
    ('\u{201C}', "LEFT DOUBLE QUOTATION MARK", "\""),
    ('\u{201D}', "RIGHT DOUBLE QUOTATION MARK", "\""),
    ('\u{2024}', "ONE DOT LEADER", "."),
    ('\u{202A}', "LEFT-TO-RIGHT EMBEDDING", ""),
    ('\u{202B}', "RIGHT-TO-LEFT EMBEDDING", ""),
    ('\u{202C}', "POP DIRECTIONAL FORMATTING", ""),
    ('\u{202D}', "LEFT-TO-RIGHT OVERRIDE", ""),
    ('\u{202E}', "RIGHT-TO-LEFT OVERRIDE", ""),
    ('\u{2060}', "WORD JOINER", ""),
    ('\u{2066}', "LEFT-TO-RIGHT ISOLATE", ""),
    ('\u{2067}', "RIGHT-TO-LEFT ISOLATE", ""),
    ('\u{2068}', "FIRST STRONG ISOLATE", ""),
    ('\u{2069}', "POP DIRECTIONAL ISOLATE", ""),
    ('\u{2212}', "MINUS SIGN", "-"),
    (
        '\u{FEFF}',
        "ZERO WIDTH NO-BREAK SPACE (byte order mark)",
        "",
    ),
    ('\u{FF0E}', "FULLWIDTH FULL STOP", "."),
    ('\u{FF1D}', "FULLWIDTH EQUALS SIGN", "="),
];

/// `U+0430 CYRILLIC SMALL LETTER A, which looks like "a"` (name and
/// look-alike only when the table has them).
pub(crate) fn describe(c: char) -> String {
    let code = format!("U+{:04X}", u32::from(c));
    match NAMES.binary_search_by_key(&c, |(ch, _, _)| *ch) {
        Ok(i) => {
            let (_, name, like) = NAMES[i];
            if like.is_empty() {
                format!("{code} {name}")
            } else {
                format!("{code} {name}, which looks like {like:?}")
            }
        }
        Err(_) => code,
    }
}

/// The text with what a reader cannot see written out as `\u{…}`: control,
/// invisible and direction characters always, every non-ASCII character
/// when `ascii_only` (names, where a look-alike is the danger). Long text is
/// cut so that a comment stays readable.
pub(crate) fn visible(s: &str, ascii_only: bool) -> String {
    const MAX: usize = 120;
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        let escape = hidden(c).is_some() || c == '\n' || c == '\r' || (ascii_only && !c.is_ascii());
        if escape {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// The first template delimiter in `s` (Tera/Jinja: `{{`, `{%`, `{#`), by
/// byte offset. Nothing from a request is ever rendered as a template, but
/// such text has no legitimate use in a request and is refused everywhere.
pub(crate) fn template_syntax(s: &str) -> Option<(usize, &'static str)> {
    ["{{", "{%", "{#"]
        .into_iter()
        .filter_map(|d| s.find(d).map(|i| (i, d)))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_table_is_sorted_so_lookups_find_every_entry() {
        assert!(NAMES.windows(2).all(|w| w[0].0 < w[1].0));
        for (c, name, _) in NAMES {
            assert!(describe(*c).contains(name), "{c:?}");
        }
    }

    #[test]
    fn look_alikes_are_named_with_what_they_pass_for() {
        assert_eq!(
            describe('\u{0430}'),
            "U+0430 CYRILLIC SMALL LETTER A, which looks like \"a\""
        );
        assert_eq!(describe('\u{200B}'), "U+200B ZERO WIDTH SPACE");
        assert_eq!(describe('ß'), "U+00DF");
    }

    #[test]
    fn hidden_characters_are_classified() {
        for c in ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}'] {
            assert_eq!(hidden(c), Some(Hidden::Invisible), "{c:?}");
        }
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            assert_eq!(hidden(c), Some(Hidden::Bidi), "{c:?}");
        }
        for c in ['\0', '\u{1b}', '\u{7f}', '\u{85}', '\u{9b}'] {
            assert_eq!(hidden(c), Some(Hidden::Control), "{c:?}");
        }
        for c in ['\n', '\r', '\t', 'a', 'ä', 'ß', '€'] {
            assert_eq!(hidden(c), None, "{c:?}");
        }
    }

    #[test]
    fn visible_writes_out_what_cannot_be_seen() {
        assert_eq!(visible("n\u{57d}mpy", true), "n\\u{57d}mpy");
        assert_eq!(visible("grüße\u{200b}", false), "grüße\\u{200b}");
        assert_eq!(visible(&"x".repeat(500), false).chars().count(), 121);
    }

    #[test]
    fn template_delimiters_are_found_first_one_first() {
        assert_eq!(template_syntax("a {% b %} {{ c }}"), Some((2, "{%")));
        assert_eq!(template_syntax("{# x #}"), Some((0, "{#")));
        assert_eq!(template_syntax("a { b } c }} %}"), None);
    }
}
