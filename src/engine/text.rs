//! What counts as text: the one rule for "empty" shared by `/v1/classify`, batch lines
//! and label sets, and the encoding problems (NUL, lone surrogates) every entry point
//! names the same way.

/// A text no model can read, with the message every entry point gives for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Only whitespace and invisible characters: the model would see no word.
    #[error("text is empty (only whitespace or invisible characters)")]
    Blank,
    /// A NUL character (`\u0000`): never part of real text, and Postgres cannot store it.
    #[error("text contains a NUL character (\\u0000)")]
    Nul,
    /// A UTF-16 surrogate escape without its pair (`"\ud800"`), which is no character.
    #[error("text contains a lone surrogate escape such as \\ud800, which is not a character")]
    LoneSurrogate,
}

impl TextError {
    /// The batch error row code (docs/api.md#input-lines-results-and-error-codes).
    pub fn code(self) -> &'static str {
        match self {
            TextError::Blank => "empty_text",
            TextError::Nul | TextError::LoneSurrogate => "invalid_text",
        }
    }
}

/// Checks a text to classify (or a label example): not blank, no NUL.
pub fn check(text: &str) -> Result<(), TextError> {
    if text.contains('\0') {
        Err(TextError::Nul)
    } else if is_blank(text) {
        Err(TextError::Blank)
    } else {
        Ok(())
    }
}

/// True when `text` has nothing but whitespace and invisible characters (zero-width
/// spaces and joiners, soft hyphens, BOMs, bidi marks, variation selectors...): what a
/// tokenizer drops, so such a text would be classified on no words at all.
pub fn is_blank(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_whitespace() || is_default_ignorable(c))
}

/// Unicode's Default_Ignorable_Code_Point property (DerivedCoreProperties.txt, 15.1):
/// characters that render as nothing unless a font has a special reason to show them.
pub fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{034F}'
        | '\u{061C}'
        | '\u{115F}'..='\u{1160}'
        | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// True when serde_json refused a string for a lone surrogate escape: it reports a
/// trailing one as "lone leading surrogate in hex escape" and a leading one without
/// its pair as "unexpected end of hex escape" (pinned by a test against serde_json).
pub fn is_lone_surrogate(err: &serde_json::Error) -> bool {
    let message = err.to_string();
    message.contains("surrogate") || message.contains("unexpected end of hex escape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_characters_are_blank_and_visible_ones_are_not() {
        for blank in [
            "",
            " \t\r\n",
            "\u{200B}",
            "\u{200C}\u{200D}",
            "\u{2060}",
            "\u{FEFF}",
            "\u{00AD}",
            "\u{00A0}\u{3000}\u{200B} \u{FE0F}",
        ] {
            assert!(is_blank(blank), "{blank:?}");
            assert_eq!(check(blank), Err(TextError::Blank));
        }
        for text in ["a", "\u{200B}a\u{200B}", "\u{0301}", "🙂", "-"] {
            assert!(!is_blank(text), "{text:?}");
            assert_eq!(check(text), Ok(()));
        }
    }

    #[test]
    fn nul_is_refused_before_blankness() {
        assert_eq!(check("a\0b"), Err(TextError::Nul));
        assert_eq!(check("\0"), Err(TextError::Nul));
        assert_eq!(TextError::Nul.code(), "invalid_text");
        assert_eq!(TextError::Blank.code(), "empty_text");
    }

    #[test]
    fn serde_json_surrogate_errors_are_recognised() {
        for json in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""a\ud800b""#,
        ] {
            let err = serde_json::from_str::<String>(json).unwrap_err();
            assert!(is_lone_surrogate(&err), "{json}: {err}");
        }
        for json in [r#""\u12""#, r#""\x""#, r#""abc"#] {
            let err = serde_json::from_str::<String>(json).unwrap_err();
            assert!(!is_lone_surrogate(&err), "{json}: {err}");
        }
        assert_eq!(
            serde_json::from_str::<String>(r#""\ud83d\ude00""#).unwrap(),
            "😀"
        );
    }
}
