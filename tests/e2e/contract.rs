//! The OpenAPI contract as a test oracle: every response a test sees must have a documented
//! status for its route and method, and a JSON body must validate against the documented schema.
//! Shared by the in-process API tests (server/tests/api/) and the end-to-end tests.

#![allow(dead_code)] // each test crate uses a subset

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Compiled response schemas by (method, path template, status, media type).
type Validators = HashMap<(String, String, u16, String), Arc<jsonschema::Validator>>;

pub struct Contract {
    spec: Value,
    validators: Mutex<Validators>,
}

pub const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

impl Contract {
    pub fn load() -> Contract {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml");
        let text = std::fs::read_to_string(path).expect("openapi.yaml");
        let spec: Value = serde_norway::from_str(&text).expect("openapi.yaml parses");
        assert_eq!(spec["openapi"], "3.1.0");
        Contract {
            spec,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// Every documented (method, path template).
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (path, item) in self.spec["paths"].as_object().expect("paths") {
            for m in METHODS {
                if item.get(m).is_some() {
                    out.push((m.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    /// The documented template a concrete path matches (literal segments beat parameters).
    pub fn template(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or(path);
        let segs: Vec<&str> = path.split('/').collect();
        let mut best: Option<(usize, String)> = None;
        for template in self.spec["paths"].as_object().expect("paths").keys() {
            let t: Vec<&str> = template.split('/').collect();
            if t.len() != segs.len() {
                continue;
            }
            let mut literal = 0;
            let fits = t.iter().zip(&segs).all(|(a, b)| {
                if a.starts_with('{') {
                    true
                } else {
                    literal += 1;
                    a == b
                }
            });
            if fits && best.as_ref().is_none_or(|(l, _)| literal > *l) {
                best = Some((literal, template.clone()));
            }
        }
        best.map(|(_, t)| t)
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let mut cur = &self.spec;
                for part in r.trim_start_matches("#/").split('/') {
                    cur = &cur[part];
                }
                cur
            }
            None => v,
        }
    }

    /// Panics unless the response is documented and its JSON body fits the schema.
    pub fn check(&self, method: &str, path: &str, status: u16, content_type: &str, body: &[u8]) {
        let template = self
            .template(path)
            .unwrap_or_else(|| panic!("{method} {path}: no documented path matches"));
        let op = &self.spec["paths"][&template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template}: method not documented");
        let response = op["responses"]
            .get(status.to_string())
            .map(|r| self.resolve(r))
            .unwrap_or_else(|| {
                panic!(
                    "{method} {template}: status {status} is not documented; body: {}",
                    String::from_utf8_lossy(&body[..body.len().min(500)])
                )
            });
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let content = &response["content"];
        let Some(doc) = content.get(&media) else {
            panic!("{method} {template} {status}: content type {media:?} is not documented (have {content})");
        };
        if media != "application/json" {
            return;
        }
        let key = (method.to_string(), template.clone(), status, media);
        let validator = {
            let mut cache = self.validators.lock().unwrap();
            cache
                .entry(key)
                .or_insert_with(|| {
                    let mut schema = doc["schema"].clone();
                    // Resolve `#/components/...` references against the whole document.
                    schema
                        .as_object_mut()
                        .expect("schema object")
                        .insert("components".into(), self.spec["components"].clone());
                    Arc::new(
                        jsonschema::options()
                            .with_draft(jsonschema::Draft::Draft202012)
                            .build(&schema)
                            .unwrap_or_else(|e| panic!("{method} {template}: bad schema: {e}")),
                    )
                })
                .clone()
        };
        let instance: Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{method} {path} {status}: body is not JSON: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: response does not fit openapi.yaml:\n  {}\nbody: {}",
            errors.join("\n  "),
            String::from_utf8_lossy(&body[..body.len().min(2000)])
        );
    }
}
