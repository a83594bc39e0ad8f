//! The fields of a token request's body: `application/x-www-form-urlencoded`,
//! or a flat JSON object (string members read, other scalars ignored).
//!
//! Only the fields an endpoint knows are kept; a repeated known field, a
//! known field that is not a string, and any other media type are refused.

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

use crate::error::Error;
use crate::http::Request;

/// The known fields of a form or JSON body.
pub(crate) struct Fields {
    pairs: Vec<(&'static str, String)>,
}

impl Fields {
    /// Parses the body by its content type, keeping only `known` fields.
    pub(crate) fn parse(request: &Request, known: &[&'static str]) -> Result<Fields, Error> {
        parse_fields(request.content_type.as_deref(), &request.body, known)
            .map(|pairs| Fields { pairs })
    }

    pub(crate) fn optional(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn required(&self, name: &'static str) -> Result<&str, Error> {
        match self.pairs.iter().find(|(n, _)| *n == name) {
            None => Err(Error::MissingField(name)),
            Some((_, v)) if v.is_empty() => Err(Error::EmptyField(name)),
            Some((_, v)) => Ok(v),
        }
    }
}

/// The `known` fields of a form or JSON body, as (name, value), refusing
/// repeated and non-string fields and unknown content types. Entry point for
/// the fuzz target.
pub fn parse_fields(
    content_type: Option<&str>,
    body: &[u8],
    known: &[&'static str],
) -> Result<Vec<(&'static str, String)>, Error> {
    let media_type = content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let raw: Vec<(String, Option<String>)> = match media_type.as_deref() {
        // Clients that send no type at all get the form reading; every
        // known client sends one.
        None | Some("application/x-www-form-urlencoded") => form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Some(v.into_owned())))
            .collect(),
        Some("application/json") => parse_json_object(body)?,
        Some(_) => return Err(Error::UnsupportedMediaType),
    };
    let mut pairs: Vec<(&'static str, String)> = Vec::with_capacity(known.len());
    for (key, value) in raw {
        let Some(name) = known.iter().find(|k| **k == key) else {
            continue;
        };
        if pairs.iter().any(|(n, _)| n == name) {
            return Err(Error::RepeatedField(name));
        }
        let Some(text) = value else {
            return Err(Error::MalformedBody("fields must be strings"));
        };
        pairs.push((name, text));
    }
    Ok(pairs)
}

/// A flat JSON object as its list of members, duplicates kept (serde_json's
/// `Map` would silently keep the last one); a member that is not a string
/// is `None`.
///
/// SECURITY: only a flat object can be valid, so an array or object as a
/// member's value is refused where it starts, never descended into. A
/// parser that builds whole values recurses once per level, and the 8 KiB
/// body holds 4,000 levels of `[`: that overflows a worker's stack and
/// aborts the whole process (127 levels of objects did in a debug build).
fn parse_json_object(body: &[u8]) -> Result<Vec<(String, Option<String>)>, Error> {
    struct Members(Vec<(String, Option<String>)>);
    /// A member's value: a string, or another scalar (ignored unless it is
    /// a known field, which must be a string).
    struct Scalar(Option<String>);
    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Scalar;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a string, number, boolean or null")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                    Ok(Scalar(Some(v.to_owned())))
                }
                fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Scalar, E> {
                    Ok(Scalar(Some(v)))
                }
                fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Scalar, E> {
                    Ok(Scalar(None))
                }
                fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Scalar, E> {
                    Ok(Scalar(None))
                }
                fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Scalar, E> {
                    Ok(Scalar(None))
                }
                fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Scalar, E> {
                    Ok(Scalar(None))
                }
                fn visit_unit<E: serde::de::Error>(self) -> Result<Scalar, E> {
                    Ok(Scalar(None))
                }
                // `visit_seq` and `visit_map` keep serde's default: an
                // error at once, without reading the array or object.
            }
            d.deserialize_any(V)
        }
    }
    impl<'de> Deserialize<'de> for Members {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Members;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a flat JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                    let mut members = Vec::new();
                    while let Some((key, Scalar(value))) = map.next_entry::<String, Scalar>()? {
                        members.push((key, value));
                    }
                    Ok(Members(members))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Members>(body)
        .map(|m| m.0)
        .map_err(|_| Error::MalformedBody("expected a flat JSON object"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> Request {
        Request {
            method: "POST".into(),
            path: "/swap".into(),
            minor_version: 1,
            content_type: Some("application/x-www-form-urlencoded".into()),
            body: body.as_bytes().to_vec(),
            ..Request::default()
        }
    }

    fn json(body: &str) -> Request {
        Request {
            content_type: Some("application/json; charset=utf-8".into()),
            ..form(body)
        }
    }

    #[test]
    fn form_fields_are_decoded() {
        let f = Fields::parse(&form("code=a%2Bb+c&other=x"), &["code"]).unwrap();
        assert_eq!(f.required("code"), Ok("a+b c"));
    }

    #[test]
    fn repeated_form_field_is_refused() {
        let err = Fields::parse(&form("code=a&code=b"), &["code"])
            .err()
            .unwrap();
        assert_eq!(err, Error::RepeatedField("code"));
    }

    #[test]
    fn empty_and_missing_fields_are_distinguished() {
        let f = Fields::parse(&form("code="), &["code", "redirect_uri"]).unwrap();
        assert_eq!(f.required("code"), Err(Error::EmptyField("code")));
        assert_eq!(
            f.required("redirect_uri"),
            Err(Error::MissingField("redirect_uri"))
        );
    }

    #[test]
    fn json_body_is_accepted_with_charset() {
        let f = Fields::parse(&json(r#"{"code":"abc","extra":1}"#), &["code"]).unwrap();
        assert_eq!(f.required("code"), Ok("abc"));
    }

    #[test]
    fn repeated_json_member_is_refused() {
        let err = Fields::parse(&json(r#"{"code":"a","code":"b"}"#), &["code"])
            .err()
            .unwrap();
        assert_eq!(err, Error::RepeatedField("code"));
    }

    #[test]
    fn non_object_or_non_string_json_is_malformed() {
        for body in [r#"["code"]"#, r#"{"code":1}"#, "{", "", "null"] {
            assert!(
                matches!(
                    Fields::parse(&json(body), &["code"]),
                    Err(Error::MalformedBody(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn json_arrays_and_objects_are_refused_without_descending() {
        // 100,000 levels: far past any stack a recursive parser could use.
        let deep = format!(r#"{{"code":{}"#, "[".repeat(100_000));
        let deep_objects = format!(r#"{{"other":{}"#, r#"{"a":"#.repeat(100_000));
        for body in [
            deep.as_str(),
            deep_objects.as_str(),
            r#"{"code":"a","other":[]}"#,
            r#"{"other":{},"code":"a"}"#,
            r#"{"code":["a"]}"#,
        ] {
            assert_eq!(
                Fields::parse(&json(body), &["code"]).err(),
                Some(Error::MalformedBody("expected a flat JSON object")),
                "{}",
                &body[..body.len().min(40)]
            );
        }
    }

    #[test]
    fn json_scalars_in_other_members_are_ignored() {
        let f = Fields::parse(
            &json(r#"{"a":1,"b":-2.5e3,"c":true,"d":null,"code":"x","e":"y"}"#),
            &["code"],
        )
        .unwrap();
        assert_eq!(f.required("code"), Ok("x"));
    }

    #[test]
    fn other_content_types_are_unsupported() {
        let request = Request {
            content_type: Some("text/plain".into()),
            ..form("code=a")
        };
        assert_eq!(
            Fields::parse(&request, &["code"]).err(),
            Some(Error::UnsupportedMediaType)
        );
    }
}
