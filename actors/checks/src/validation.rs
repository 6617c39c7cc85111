//! Checks on sign-up fields. Each failure names the field and the rule.

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use protocol::auth::SignUpRequest;
use unicode_normalization::UnicodeNormalization;

/// A field that broke a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct InvalidField {
    /// The request field that broke the rule (`email`, `password`, `birthday`, ...).
    pub field: &'static str,
    /// The rule it broke, for people (`must be at least 8 characters`).
    pub rule: String,
}

fn invalid(field: &'static str, rule: impl Into<String>) -> InvalidField {
    InvalidField {
        field,
        rule: rule.into(),
    }
}

/// A sign-up that passed every check, normalised for storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSignUp {
    /// Trimmed and lowercased.
    pub email: String,
    /// As sent (not trimmed): 8 or more characters, at most 256 bytes, no NUL.
    pub password: String,
    /// Trimmed; 1 to [`NAME_MAX_CHARS`] characters, no control characters but newline.
    pub name: String,
    /// Trimmed; same rules as `name`.
    pub surname: String,
    /// In UTC.
    pub birthday: NaiveDateTime,
    /// Lowercased: one of [`SEXES`].
    pub sex: String,
    /// Trimmed; same rules as `name`.
    pub city: String,
    /// Trimmed; may be empty, at most [`INTERESTS_MAX_CHARS`] characters.
    pub interests: String,
}

/// Fewest characters (not bytes) a password may have.
pub const PASSWORD_MIN_CHARS: usize = 8;
/// Most bytes a password may have: bounds the hashing work one request can ask for.
pub const PASSWORD_MAX_BYTES: usize = 256;
/// Most characters of `name`, `surname` and `city` after trimming.
pub const NAME_MAX_CHARS: usize = 100;
/// Most characters of `interests` after trimming.
pub const INTERESTS_MAX_CHARS: usize = 2000;
/// The accepted values of `sex`, lowercase.
pub const SEXES: &[&str] = &["male", "female", "other"];

/// The one form of an email that is stored, looked up and rate-limited, or what is
/// wrong with it: trimmed, lowercase, Unicode NFC. The database compares emails byte for
/// byte, so `bób@x.io` and `bob@x.io` are two emails, while `bób` typed with a combining
/// accent (NFD) is the same email as `bób` typed precomposed.
pub fn normalize_email(raw: &str) -> Result<String, InvalidField> {
    // Lowercasing can leave a composable sequence behind: NFC once more after it.
    let email: String = raw.trim().nfc().collect::<String>().to_lowercase().nfc().collect();
    if email.is_empty() {
        return Err(invalid("email", "must not be empty"));
    }
    if email.chars().count() > 254 {
        return Err(invalid("email", "must be at most 254 characters"));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("email", "must not contain spaces or control characters"));
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(invalid("email", "must look like name@example.com"));
    };
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(invalid("email", "must look like name@example.com"));
    }
    Ok(email)
}

fn text_field(field: &'static str, value: &str, allow_empty: bool, max_chars: usize) -> Result<String, InvalidField> {
    let value = value.trim();
    if !allow_empty && value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(invalid(field, format!("must be at most {max_chars} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// Checks every field of a sign-up.
pub fn validate_sign_up(request: &SignUpRequest, now: DateTime<Utc>) -> Result<ValidSignUp, InvalidField> {
    let email = normalize_email(&request.email)?;
    if request.password.chars().count() < PASSWORD_MIN_CHARS {
        return Err(invalid(
            "password",
            format!("must be at least {PASSWORD_MIN_CHARS} characters"),
        ));
    }
    if request.password.len() > PASSWORD_MAX_BYTES {
        return Err(invalid(
            "password",
            format!("must be at most {PASSWORD_MAX_BYTES} bytes"),
        ));
    }
    if request.password.contains('\0') {
        return Err(invalid("password", "must not contain NUL"));
    }
    let birthday = DateTime::parse_from_rfc3339(request.birthday.trim())
        .map_err(|_| {
            invalid(
                "birthday",
                "must be an RFC 3339 date-time such as 1994-04-10T20:21:25+00:00",
            )
        })?
        .with_timezone(&Utc);
    if birthday > now {
        return Err(invalid("birthday", "must not be in the future"));
    }
    // chrono reads `23:59:60` as a leap second (a nanosecond field past one second),
    // which no SQL DATETIME can hold.
    if birthday.nanosecond() >= 1_000_000_000 {
        return Err(invalid("birthday", "a leap second (:60) cannot be stored; use :59"));
    }
    if birthday.format("%Y").to_string().parse::<i32>().unwrap_or(0) < 1900 {
        return Err(invalid("birthday", "must not be before 1900"));
    }
    let sex = request.sex.trim().to_lowercase();
    if !SEXES.contains(&sex.as_str()) {
        return Err(invalid("sex", format!("must be one of {}", SEXES.join(", "))));
    }
    Ok(ValidSignUp {
        email,
        password: request.password.clone(),
        name: text_field("name", &request.name, false, NAME_MAX_CHARS)?,
        surname: text_field("surname", &request.surname, false, NAME_MAX_CHARS)?,
        birthday: birthday.naive_utc(),
        sex,
        city: text_field("city", &request.city, false, NAME_MAX_CHARS)?,
        interests: text_field("interests", &request.interests, true, INTERESTS_MAX_CHARS)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_has_one_form_per_written_spelling_and_accents_count() {
        let precomposed = normalize_email(" B\u{00f3}b@X.io ").unwrap();
        let decomposed = normalize_email("BO\u{0301}B@x.io").unwrap();
        assert_eq!(precomposed, "b\u{00f3}b@x.io");
        assert_eq!(decomposed, precomposed, "NFD and NFC are one email");
        assert_ne!(
            normalize_email("bob@x.io").unwrap(),
            precomposed,
            "an accent makes another email"
        );
    }

    fn bob() -> SignUpRequest {
        SignUpRequest {
            email: " Bob@Email.com ".into(),
            password: "1234567890".into(),
            name: "Bob".into(),
            surname: "Tallor".into(),
            birthday: "1994-04-10T20:21:25+00:00".into(),
            sex: "male".into(),
            city: "New Yourk".into(),
            interests: "programming".into(),
        }
    }

    #[test]
    fn the_seeds_bob_is_valid_and_normalised() {
        let valid = validate_sign_up(&bob(), Utc::now()).unwrap();
        assert_eq!(valid.email, "bob@email.com");
        assert_eq!(valid.birthday.to_string(), "1994-04-10 20:21:25");
    }

    type Breakage = Box<dyn Fn(&mut SignUpRequest)>;

    #[test]
    fn each_broken_rule_names_its_field() {
        let cases: Vec<(&str, Breakage)> = vec![
            ("email", Box::new(|r| r.email = "no-at-sign".into())),
            ("email", Box::new(|r| r.email = "a@b@c.d".into())),
            ("password", Box::new(|r| r.password = "short".into())),
            ("password", Box::new(|r| r.password = "x".repeat(300))),
            ("birthday", Box::new(|r| r.birthday = "yesterday".into())),
            ("birthday", Box::new(|r| r.birthday = "2999-01-01T00:00:00Z".into())),
            (
                "birthday",
                Box::new(|r| r.birthday = "1994-04-10T23:59:60+00:00".into()),
            ),
            ("sex", Box::new(|r| r.sex = "robot".into())),
            ("name", Box::new(|r| r.name = "   ".into())),
            ("surname", Box::new(|r| r.surname = "a\u{0}b".into())),
            ("city", Box::new(|r| r.city = "c".repeat(101))),
        ];
        for (field, break_it) in cases {
            let mut request = bob();
            break_it(&mut request);
            let error = validate_sign_up(&request, Utc::now()).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }
}
