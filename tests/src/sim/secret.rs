//! What the API server does to a Secret on every write, as Kubernetes does it: `stringData`
//! is merged into `data` (base64, `stringData` wins) and dropped, `type` defaults to `Opaque`
//! and is immutable, `data` keys are config keys and values base64, the whole `data` is at most
//! 1 MiB, and the docker-config types need their key holding valid JSON. Messages never quote
//! a value ("<secret contents redacted>", as Kubernetes says).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::status::Cause;

const MAX_SECRET_BYTES: usize = 1024 * 1024;
const REDACTED: &str = "<secret contents redacted>";

/// The Secret as stored, or why it is invalid (`Err(None)`: a body that cannot be decoded,
/// which Kubernetes answers with 400 before validating).
pub fn admit(mut secret: Value, old: Option<&Value>) -> Result<Value, AdmitError> {
    let Some(map) = secret.as_object_mut() else {
        return Ok(secret);
    };
    let mut data = match map.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(d)) => d,
        Some(_) => {
            return Err(AdmitError::BadRequest(
                "data must be a map of strings".into(),
            ));
        }
    };
    let mut decoded_total = 0usize;
    let mut decoded: Vec<(String, Vec<u8>)> = Vec::new();
    for (key, value) in &data {
        let Some(text) = value.as_str() else {
            return Err(AdmitError::BadRequest(format!(
                "data[{key}] must be a base64 string"
            )));
        };
        let bytes = STANDARD.decode(text).map_err(|e| {
            AdmitError::BadRequest(format!("illegal base64 data in data[{key}]: {e}"))
        })?;
        decoded_total += bytes.len();
        decoded.push((key.clone(), bytes));
    }
    if let Some(string_data) = map.remove("stringData") {
        let Value::Object(string_data) = string_data else {
            return Err(AdmitError::BadRequest(
                "stringData must be a map of strings".into(),
            ));
        };
        for (key, value) in string_data {
            let Some(text) = value.as_str() else {
                return Err(AdmitError::BadRequest(format!(
                    "stringData[{key}] must be a string"
                )));
            };
            decoded.retain(|(k, _)| k != &key);
            decoded.push((key.clone(), text.as_bytes().to_vec()));
            data.insert(key, Value::String(STANDARD.encode(text)));
        }
        decoded_total = decoded.iter().map(|(_, b)| b.len()).sum();
    }
    let type_ = match map.get("type").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => "Opaque".to_string(),
    };
    map.insert("type".into(), Value::String(type_.clone()));
    if !data.is_empty() {
        map.insert("data".into(), Value::Object(data));
    }

    let mut causes = Vec::new();
    for (key, _) in &decoded {
        if !is_config_key(key) {
            causes.push(Cause::new(
                "FieldValueInvalid",
                format!("data[{key}]"),
                format!("Invalid value: \"{key}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'"),
            ));
        }
    }
    if decoded_total > MAX_SECRET_BYTES {
        causes.push(Cause::new(
            "FieldValueTooLong",
            "data",
            format!("Too long: may not be more than {MAX_SECRET_BYTES} bytes"),
        ));
    }
    let required = match type_.as_str() {
        "kubernetes.io/dockerconfigjson" => Some(".dockerconfigjson"),
        "kubernetes.io/dockercfg" => Some(".dockercfg"),
        _ => None,
    };
    if let Some(key) = required {
        match decoded.iter().find(|(k, _)| k == key) {
            None => causes.push(Cause::new(
                "FieldValueRequired",
                format!("data[{key}]"),
                "Required value",
            )),
            Some((_, bytes)) => {
                if let Err(e) = serde_json::from_slice::<Value>(bytes) {
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        format!("data[{key}]"),
                        format!(
                            "Invalid value: \"{REDACTED}\": line {} column {}",
                            e.line(),
                            e.column()
                        ),
                    ));
                }
            }
        }
    }
    if let Some(old_type) = old.and_then(|o| o.get("type")).and_then(Value::as_str)
        && old_type != type_
    {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "type",
            format!("Invalid value: \"{type_}\": field is immutable"),
        ));
    }
    if causes.is_empty() {
        Ok(secret)
    } else {
        Err(AdmitError::Invalid(causes))
    }
}

#[derive(Debug)]
pub enum AdmitError {
    /// The body cannot be decoded (400).
    BadRequest(String),
    /// Validation failed (422).
    Invalid(Vec<Cause>),
}

fn is_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_data_is_merged_into_data_as_base64() {
        let stored = admit(
            json!({"metadata": {"name": "s"}, "data": {"a": "eA==", "b": "eQ=="},
                   "stringData": {"b": "new", "c": "z"}}),
            None,
        )
        .expect("admit");
        assert_eq!(
            stored["data"],
            json!({"a": "eA==", "b": "bmV3", "c": "eg=="})
        );
        assert!(stored.get("stringData").is_none());
        assert_eq!(stored["type"], "Opaque");
    }

    #[test]
    fn docker_config_secrets_need_their_key_and_valid_json() {
        let ok = admit(
            json!({"type": "kubernetes.io/dockerconfigjson",
                   "stringData": {".dockerconfigjson": "{\"auths\":{}}"}}),
            None,
        );
        assert!(ok.is_ok());
        let Err(AdmitError::Invalid(causes)) = admit(
            json!({"type": "kubernetes.io/dockerconfigjson", "data": {}}),
            None,
        ) else {
            panic!("missing key accepted")
        };
        assert_eq!(causes[0].field, "data[.dockerconfigjson]");
        let Err(AdmitError::Invalid(causes)) = admit(
            json!({"type": "kubernetes.io/dockerconfigjson",
                   "stringData": {".dockerconfigjson": "{\"auths\": hunter2"}}),
            None,
        ) else {
            panic!("broken JSON accepted")
        };
        assert!(
            !causes[0].message.contains("hunter2"),
            "{}",
            causes[0].message
        );
    }

    #[test]
    fn bad_base64_bad_keys_and_type_changes_are_refused() {
        assert!(matches!(
            admit(json!({"data": {"a": "not base64!"}}), None),
            Err(AdmitError::BadRequest(_))
        ));
        assert!(matches!(
            admit(json!({"data": {"a/b": "eA=="}}), None),
            Err(AdmitError::Invalid(_))
        ));
        let old = json!({"type": "Opaque"});
        let Err(AdmitError::Invalid(causes)) = admit(
            json!({"type": "kubernetes.io/dockercfg", "stringData": {".dockercfg": "{}"}}),
            Some(&old),
        ) else {
            panic!("type change accepted")
        };
        assert_eq!(causes[0].field, "type");
        assert!(
            admit(
                json!({"data": {"big": STANDARD.encode(vec![0u8; MAX_SECRET_BYTES + 1])}}),
                None
            )
            .is_err()
        );
    }
}
