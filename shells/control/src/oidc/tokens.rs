//! ID token validation against hand-made tokens: what a forged, replayed or misdirected
//! token looks like to [`verify`], with keys made for the test (testdata/*.pem).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

use chrono::{Duration as Span, Utc};
use openidconnect::core::{
    CoreHmacKey, CoreIdToken, CoreIdTokenClaims, CoreJsonWebKeySet, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreResponseType, CoreRsaPrivateSigningKey, CoreSubjectIdentifierType,
};
use openidconnect::{
    Audience, AuthUrl, EmptyAdditionalClaims, EmptyAdditionalProviderMetadata, EndUserEmail, IssuerUrl, JsonWebKeyId,
    JsonWebKeySetUrl, PrivateSigningKey as _, ResponseTypes, StandardClaims, SubjectIdentifier, TokenUrl,
};

use super::*;

const ISSUER: &str = "https://idp.example.com";
const CLIENT: &str = "meshcontrol";
const SECRET: &str = "the-client-secret";

fn key(pem: &str) -> CoreRsaPrivateSigningKey {
    CoreRsaPrivateSigningKey::from_pem(pem, Some(JsonWebKeyId::new("key-1".into()))).unwrap()
}

fn signing_key() -> CoreRsaPrivateSigningKey {
    key(include_str!("testdata/signing-key.pem"))
}

/// A client for a provider whose only key is testdata/signing-key.pem.
fn client() -> Client {
    let metadata = CoreProviderMetadata::new(
        IssuerUrl::new(ISSUER.into()).unwrap(),
        AuthUrl::new(format!("{ISSUER}/auth")).unwrap(),
        JsonWebKeySetUrl::new(format!("{ISSUER}/jwks")).unwrap(),
        vec![ResponseTypes::new(vec![CoreResponseType::Code])],
        vec![CoreSubjectIdentifierType::Public],
        vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256],
        EmptyAdditionalProviderMetadata {},
    )
    .set_token_endpoint(Some(TokenUrl::new(format!("{ISSUER}/token")).unwrap()))
    .set_jwks(CoreJsonWebKeySet::new(vec![signing_key().as_verification_key()]));
    CoreClient::from_provider_metadata(metadata, ClientId::new(CLIENT.into()), Some(ClientSecret::new(SECRET.into())))
        .set_redirect_uri(RedirectUrl::new("https://control.example.com/oidc/callback".into()).unwrap())
}

/// Claims as a good provider sends them; `edit` spoils them.
fn claims(edit: impl FnOnce(&mut Made)) -> CoreIdTokenClaims {
    let mut made = Made {
        issuer: ISSUER.into(),
        audience: CLIENT.into(),
        expires: Utc::now() + Span::minutes(5),
        nonce: "the-nonce".into(),
        auth_time: Some(Utc::now() - Span::seconds(5)),
    };
    edit(&mut made);
    CoreIdTokenClaims::new(
        IssuerUrl::new(made.issuer).unwrap(),
        vec![Audience::new(made.audience)],
        made.expires,
        Utc::now() - Span::seconds(10),
        StandardClaims::new(SubjectIdentifier::new("alice".into()))
            .set_email(Some(EndUserEmail::new("alice@example.com".into())))
            .set_email_verified(Some(true)),
        EmptyAdditionalClaims {},
    )
    .set_nonce(Some(Nonce::new(made.nonce)))
    .set_auth_time(made.auth_time)
}

struct Made {
    issuer: String,
    audience: String,
    expires: chrono::DateTime<Utc>,
    nonce: String,
    auth_time: Option<chrono::DateTime<Utc>>,
}

fn signed(claims: CoreIdTokenClaims) -> CoreIdToken {
    CoreIdToken::new(claims, &signing_key(), CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256, None, None).unwrap()
}

fn check(token: &CoreIdToken, max_age: Option<Duration>) -> Result<Claims, String> {
    verify(&client(), token, &Nonce::new("the-nonce".into()), max_age).map_err(|e| error_chain(&e))
}

const FIVE_MINUTES: Option<Duration> = Some(Duration::from_secs(300));

#[test]
fn a_good_token_passes_and_names_its_subject() {
    let claims = check(&signed(claims(|_| {})), FIVE_MINUTES).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.email.as_deref(), Some("alice@example.com"));
    assert_eq!(claims.email_verified, Some(true));
}

#[test]
fn wrong_audience_issuer_expiry_and_nonce_are_refused() {
    type Spoil = Box<dyn FnOnce(&mut Made)>;
    let cases: [(&str, Spoil); 4] = [
        ("audience", Box::new(|m| m.audience = "another-client".into())),
        ("issuer", Box::new(|m| m.issuer = "https://evil.example.com".into())),
        ("expired", Box::new(|m| m.expires = Utc::now() - Span::minutes(1))),
        ("nonce", Box::new(|m| m.nonce = "another-nonce".into())),
    ];
    for (what, edit) in cases {
        let error = check(&signed(claims(edit)), None).expect_err(what);
        eprintln!("{what}: {error}");
        let expected = match what {
            "audience" => "audience",
            "issuer" => "issuer",
            "expired" => "Expired",
            _ => "nonce",
        };
        assert!(error.contains(expected), "{what}: {error}");
    }
}

#[test]
fn a_check_needs_a_present_and_fresh_auth_time() {
    let error = check(&signed(claims(|m| m.auth_time = None)), FIVE_MINUTES).expect_err("missing");
    assert!(error.contains("no auth_time"), "{error}");
    let error =
        check(&signed(claims(|m| m.auth_time = Some(Utc::now() - Span::hours(2)))), FIVE_MINUTES).expect_err("stale");
    assert!(error.contains("more than 300 s"), "{error}");
    // A registration asks for no max_age: an old session at the provider is fine there.
    assert!(check(&signed(claims(|m| m.auth_time = Some(Utc::now() - Span::hours(2)))), None).is_ok());
}

#[test]
fn forged_signatures_none_and_hmac_are_refused() {
    // Signed by a key the provider does not have, under the provider's key id.
    let other = key(include_str!("testdata/other-key.pem"));
    let forged =
        CoreIdToken::new(claims(|_| {}), &other, CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256, None, None).unwrap();
    let error = check(&forged, None).expect_err("bad signature");
    assert!(error.contains("Signature verification failed"), "{error}");
    // HS256 with the client secret as the key: a valid MAC, a refused algorithm.
    let hmac = CoreIdToken::new(
        claims(|_| {}),
        &CoreHmacKey::new(SECRET.as_bytes()),
        CoreJwsSigningAlgorithm::HmacSha256,
        None,
        None,
    )
    .unwrap();
    let error = check(&hmac, None).expect_err("hmac");
    assert!(error.contains("Signature verification failed"), "{error}");
    // `alg: none`: the good token's payload with its signature taken off.
    let good = signed(claims(|_| {})).to_string();
    let payload = good.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
    let unsigned: Result<CoreIdToken, _> = format!("{header}.{payload}.").parse();
    match unsigned {
        Err(_) => {} // refused as a token at all
        Ok(token) => {
            let error = check(&token, None).expect_err("alg none");
            assert!(error.contains("Signature verification failed"), "{error}");
        }
    }
}
