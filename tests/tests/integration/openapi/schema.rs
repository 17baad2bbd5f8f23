//! Reading the served OpenAPI document: its operations, a validator for the
//! JSON Schema subset the document uses, and values generated from a schema.

use rand::RngExt as _;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use reqwest::Method;
use serde_json::{Map, Value, json};

/// One documented operation.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Its method.
    pub method: Method,
    /// Its path template (`/api/builds/{id}/status`).
    pub path: String,
    /// Its operation object.
    pub spec: Value,
}

impl Operation {
    /// `GET /api/builds/{id}/status`.
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The parameters of one location (`path`, `query`, `header`).
    pub fn params(&self, location: &str) -> Vec<&Value> {
        self.spec["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == location).collect()
    }

    /// The request body's media types and schemas.
    pub fn body(&self) -> Option<(&str, &Value)> {
        let content = self.spec["requestBody"]["content"].as_object()?;
        content.iter().next().map(|(media, spec)| (media.as_str(), &spec["schema"]))
    }

    /// Whether the document lists `status` for this operation.
    pub fn documents_status(&self, status: u16) -> bool {
        self.spec["responses"].get(status.to_string()).is_some()
    }

    /// The JSON schema of a response, if it is documented as JSON.
    pub fn json_response(&self, status: u16) -> Option<&Value> {
        let schema = &self.spec["responses"][status.to_string()]["content"]["application/json"]["schema"];
        (!schema.is_null()).then_some(schema)
    }
}

/// Every operation of the document.
pub fn operations(doc: &Value) -> Vec<Operation> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, spec) in item.as_object().expect("path item") {
            let method = match method.as_str() {
                "get" => Method::GET,
                "post" => Method::POST,
                "put" => Method::PUT,
                "delete" => Method::DELETE,
                "patch" => Method::PATCH,
                "options" => Method::OPTIONS,
                "head" => Method::HEAD,
                _ => continue,
            };
            found.push(Operation { method, path: path.clone(), spec: spec.clone() });
        }
    }
    found
}

/// Follows `$ref`s into `#/components/...`.
pub fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let pointer = reference.strip_prefix('#').expect("local references only");
        schema = doc.pointer(pointer).unwrap_or_else(|| panic!("dangling reference {reference}"));
    }
    schema
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => true,
    }
}

/// Checks `value` against `schema` (types, enums, required properties, items,
/// `oneOf`/`anyOf`/`allOf`); the error names the first mismatch and where.
pub fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(options) = schema["oneOf"].as_array() {
        let matching = options.iter().filter(|s| validate(doc, s, value, at).is_ok()).count();
        if matching != 1 {
            return Err(format!("{at}: {value} matches {matching} of the oneOf schemas"));
        }
    }
    if let Some(options) = schema["anyOf"].as_array()
        && !options.iter().any(|s| validate(doc, s, value, at).is_ok())
    {
        return Err(format!("{at}: {value} matches none of the anyOf schemas"));
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        validate(doc, part, value, at)?;
    }
    match &schema["type"] {
        Value::String(name) if !type_matches(name, value) => {
            return Err(format!("{at}: expected {name}, got {value}"));
        }
        Value::Array(names) if !names.iter().filter_map(Value::as_str).any(|n| type_matches(n, value)) => {
            return Err(format!("{at}: expected one of {names:?}, got {value}"));
        }
        _ => {}
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                return Err(format!("{at}: required property {name} is missing in {value}"));
            }
        }
        if let Some(properties) = schema["properties"].as_object() {
            for (name, property) in properties {
                if let Some(v) = object.get(name) {
                    validate(doc, property, v, &format!("{at}.{name}"))?;
                }
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, item) in list.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Values that name things of the running controller, so that generated
/// requests reach past the credential and existence checks.
pub trait Hints {
    /// A value for a property or parameter of this name, if the name is known.
    fn for_name(&self, name: &str, rng: &mut StdRng) -> Option<Value>;
}

/// A value of `schema` (valid as far as the schema says), preferring `hints`.
pub fn sample(doc: &Value, schema: &Value, name: Option<&str>, hints: &dyn Hints, rng: &mut StdRng) -> Value {
    if let Some(value) = name.and_then(|n| hints.for_name(n, rng)) {
        return value;
    }
    let schema = resolve(doc, schema);
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            let chosen = options.choose(rng).expect("non-empty oneOf");
            return sample(doc, chosen, name, hints, rng);
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        return allowed.choose(rng).cloned().unwrap_or(Value::Null);
    }
    let kind = match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(types) => {
            let non_null: Vec<&str> = types.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect();
            if non_null.is_empty() || rng.random_bool(0.1) {
                return Value::Null;
            }
            non_null.choose(rng).unwrap().to_string()
        }
        _ => "object".to_owned(),
    };
    match kind.as_str() {
        "object" => {
            let mut object = Map::new();
            let required: Vec<&str> =
                schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            for (prop, prop_schema) in schema["properties"].as_object().into_iter().flatten() {
                if required.contains(&prop.as_str()) || rng.random_bool(0.6) {
                    object.insert(prop.clone(), sample(doc, prop_schema, Some(prop), hints, rng));
                }
            }
            if schema["properties"].is_null() && rng.random_bool(0.7) {
                object.insert("cpu_percent".into(), json!(rng.random_range(0.0..100.0)));
                object.insert("memory_mb".into(), json!(rng.random_range(0..4096)));
            }
            Value::Object(object)
        }
        "array" => {
            let n = rng.random_range(0..4);
            Value::Array((0..n).map(|_| sample(doc, &schema["items"], None, hints, rng)).collect())
        }
        "integer" => {
            let min = schema["minimum"].as_i64().unwrap_or(-10);
            let max = schema["maximum"].as_i64().unwrap_or(100_000).max(min);
            json!(rng.random_range(min..=max))
        }
        "number" => json!(rng.random_range(0.0..500.0)),
        "boolean" => json!(rng.random_bool(0.5)),
        _ => match schema.get("example") {
            _ if rng.random_bool(0.1) => json!(awkward_text(rng)),
            Some(example) if rng.random_bool(0.5) => example.clone(),
            _ => json!(random_text(rng, 1..24)),
        },
    }
}

/// Text that storage and logging tend to trip over: NUL and other control
/// characters, non-characters, emoji, right-to-left overrides, escapes.
pub fn awkward_text(rng: &mut StdRng) -> String {
    const AWKWARD: &[&str] = &[
        "\u{0}",
        "a\u{0}b",
        "\u{1}\u{1b}[31m",
        "\u{7f}",
        "\u{fffe}\u{ffff}",
        "😀👍🏽",
        "\u{202e}txt.exe",
        "\\",
        "%00",
        "\r\n",
    ];
    let mut text = AWKWARD.choose(rng).unwrap().to_string();
    if rng.random_bool(0.5) {
        text = format!("{}{text}{}", random_text(rng, 0..8), random_text(rng, 0..8));
    }
    text
}

/// Short printable text.
pub fn random_text(rng: &mut StdRng, len: std::ops::Range<usize>) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_- .";
    let n = rng.random_range(len);
    (0..n).map(|_| *CHARS.choose(rng).unwrap() as char).collect()
}
