//! Arbitrary bytes as the body of each JSON endpoint, read the way the node reads it
//! (`serde_json::from_slice` into the protocol type, as `json_body` does) and then
//! checked the way the accounts code checks it.
//!
//! Invariants: nothing panics; every body that parses serialises back to an equal
//! value (the node answers with these same types); a sign-up either names a known field
//! it refuses or comes out normalised (trimmed, lowercased email that normalises to
//! itself, every limit respected) and validating it again changes nothing; a sign-in's
//! email normalises to a fixed point or is refused as `email`.

#![no_main]

use checks::validation::{
    normalize_email, validate_sign_up, ValidSignUp, INTERESTS_MAX_CHARS, NAME_MAX_CHARS, PASSWORD_MAX_BYTES,
    PASSWORD_MIN_CHARS, SEXES,
};
use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use libfuzzer_sys::fuzz_target;
use protocol::auth::{RefreshTokenRequest, SignInRequest, SignUpRequest};
use protocol::messenger::CreateChatRequest;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The fields `validate_sign_up` may name in a refusal.
const SIGN_UP_FIELDS: &[&str] = &[
    "email",
    "password",
    "name",
    "surname",
    "birthday",
    "sex",
    "city",
    "interests",
];

/// A fixed "now", so a crash found today replays identically tomorrow (birthdays are
/// checked against it).
fn fixed_now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("a valid constant")
        .with_timezone(&Utc)
}

fuzz_target!(|body: &[u8]| {
    if let Some(sign_up) = parsed_body::<SignUpRequest>(body) {
        check_sign_up(&sign_up);
    }
    if let Some(sign_in) = parsed_body::<SignInRequest>(body) {
        check_email(&sign_in.email);
    }
    // These two only reach token and UUID checks in the node crate; what the shared
    // code owns is the parse and the round trip.
    parsed_body::<RefreshTokenRequest>(body);
    parsed_body::<CreateChatRequest>(body);
});

/// The body as the node reads it, or `None` where the node answers 400; a parsed body
/// must survive a round trip through its own JSON.
fn parsed_body<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(body: &[u8]) -> Option<T> {
    let parsed: T = serde_json::from_slice(body).ok()?;
    let written = serde_json::to_vec(&parsed).expect("protocol types serialise");
    let reread: T = serde_json::from_slice(&written).expect("a body written by serde_json reads back");
    assert_eq!(reread, parsed, "round trip changed the body");
    Some(parsed)
}

fn check_sign_up(request: &SignUpRequest) {
    let now = fixed_now();
    let valid = match validate_sign_up(request, now) {
        Ok(valid) => valid,
        Err(refusal) => {
            assert!(
                SIGN_UP_FIELDS.contains(&refusal.field),
                "unknown field {:?}",
                refusal.field
            );
            assert!(!refusal.rule.is_empty(), "a refusal without a rule");
            return;
        }
    };
    assert_eq!(normalize_email(&request.email).as_ref(), Ok(&valid.email));
    assert_normalized_email(&valid.email);

    assert_eq!(valid.password, request.password, "the password is stored as sent");
    assert!(valid.password.chars().count() >= PASSWORD_MIN_CHARS);
    assert!(valid.password.len() <= PASSWORD_MAX_BYTES);
    assert!(!valid.password.contains('\0'));

    for (field, value, allow_empty, max_chars) in [
        ("name", &valid.name, false, NAME_MAX_CHARS),
        ("surname", &valid.surname, false, NAME_MAX_CHARS),
        ("city", &valid.city, false, NAME_MAX_CHARS),
        ("interests", &valid.interests, true, INTERESTS_MAX_CHARS),
    ] {
        assert_eq!(value.trim(), value.as_str(), "{field} is not trimmed");
        assert!(allow_empty || !value.is_empty(), "{field} is empty");
        assert!(value.chars().count() <= max_chars, "{field} is too long");
        assert!(
            !value.chars().any(|c| c.is_control() && c != '\n'),
            "{field} holds a control character"
        );
    }
    assert!(SEXES.contains(&valid.sex.as_str()), "sex {:?}", valid.sex);
    assert!(valid.birthday <= now.naive_utc(), "a birthday in the future");
    assert!(valid.birthday.year() >= 1900, "a birthday before 1900");

    // What was stored is itself a valid sign-up that normalises to the same record: the
    // rules are a fixed point, so no stored user fails them when read back and checked.
    let revalidated = validate_sign_up(&request_from(&valid), now)
        .unwrap_or_else(|refusal| panic!("a normalised sign-up is refused: {refusal}"));
    assert_eq!(revalidated, valid, "validating a normalised sign-up changed it");
}

/// A sign-up body carrying a validated record's values.
fn request_from(valid: &ValidSignUp) -> SignUpRequest {
    SignUpRequest {
        email: valid.email.clone(),
        password: valid.password.clone(),
        name: valid.name.clone(),
        surname: valid.surname.clone(),
        birthday: valid.birthday.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true),
        sex: valid.sex.clone(),
        city: valid.city.clone(),
        interests: valid.interests.clone(),
    }
}

/// Sign-in and get-by-email look users up by the normalised email.
fn check_email(raw: &str) {
    match normalize_email(raw) {
        Ok(email) => assert_normalized_email(&email),
        Err(refusal) => assert_eq!(refusal.field, "email"),
    }
}

/// A stored or looked-up email: a fixed point of normalisation, of the shape the rules
/// promise.
fn assert_normalized_email(email: &str) {
    assert_eq!(
        normalize_email(email).as_deref(),
        Ok(email),
        "a normalised email normalises to something else"
    );
    assert!(email.chars().count() <= 254, "email too long");
    assert!(!email.chars().any(|c| c.is_whitespace() || c.is_control()));
    let (local, domain) = email.split_once('@').expect("an email has an @");
    assert!(!local.is_empty() && !domain.contains('@'), "email {email:?}");
    assert!(domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.'));
}
