//! Conformance of the consumer APIs with the official specs in `../shared/specs/azure-devops/`
//! (serviceEndpoint 7.2, distributedTask 7.2): every response shape validates against the spec's schemas,
//! and the specs' `httpExamples` for service endpoints, execution history and variable groups are replayed.
//!
//! Swagger 2.0 → JSON Schema, as in `conformance.rs`, plus what these two specs need (docs/emulator.md):
//! - `allOf: [{$ref}]` next to `properties` (`IdentityRef` extends `GraphSubjectBase`) merges the base's
//!   properties, so `additionalProperties: false` still sees them;
//! - values of string maps may be `null` too (the spec's own update example returns `"Password": null`);
//! - `ReferenceLinks` is a free-form map (`{"avatar": {"href": …}}` on the wire; the spec describes the .NET
//!   class), and `VariableGroupProviderData` is a base class whose subclasses add fields: both any object.

use crate::consumers::{Auth, EP_FEED, GROUP, KV_GROUP, world};
use crate::support::*;
use jsonschema::Validator;
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

fn specs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/specs/azure-devops")
}

fn load(rel: &str) -> Value {
    let text = std::fs::read_to_string(specs().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str(text.trim_start_matches('\u{feff}')).unwrap()
}

const FREE_FORM: &[&str] = &["ReferenceLinks", "VariableGroupProviderData"];

fn nullable(v: Value) -> Value {
    json!({ "anyOf": [{ "type": "null" }, v] })
}

fn transform(v: &Value, defs: &Map<String, Value>) -> Value {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str)
                && FREE_FORM.iter().any(|f| r.ends_with(&format!("/{f}")))
            {
                return json!({ "type": "object" });
            }
            let bare = m.get("type") == Some(&json!("object"))
                && !m.contains_key("properties")
                && !m.contains_key("additionalProperties")
                && !m.contains_key("$ref")
                && !m.contains_key("allOf");
            if bare {
                return json!({});
            }
            let mut props: Map<String, Value> =
                m.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
            if let Some(all) = m.get("allOf").and_then(Value::as_array) {
                for base in all {
                    let name = base["$ref"].as_str().and_then(|r| r.rsplit('/').next()).unwrap_or_default();
                    if let Some(bp) = defs.get(name).and_then(|d| d["properties"].as_object()) {
                        for (k, s) in bp {
                            props.entry(k.clone()).or_insert_with(|| s.clone());
                        }
                    }
                }
            }
            let mut out = Map::new();
            for (k, val) in m {
                if k.starts_with("x-ms") || k == "allOf" || k == "properties" {
                    continue;
                }
                if k == "additionalProperties" && val.is_object() {
                    out.insert(k.clone(), nullable(transform(val, defs)));
                } else {
                    out.insert(k.clone(), transform(val, defs));
                }
            }
            if m.contains_key("properties") || m.contains_key("allOf") {
                let p: Map<String, Value> =
                    props.iter().map(|(n, s)| (n.clone(), nullable(transform(s, defs)))).collect();
                out.insert("properties".into(), Value::Object(p));
                out.insert("additionalProperties".into(), json!(false));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| transform(x, defs)).collect()),
        other => other.clone(),
    }
}

fn validator(spec: &Value, root: Value) -> Validator {
    let defs = spec["definitions"].as_object().unwrap();
    let mut doc = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "definitions": transform(&spec["definitions"], defs),
    });
    for (k, v) in root.as_object().unwrap() {
        doc[k] = v.clone();
    }
    jsonschema::options().should_validate_formats(true).build(&doc).unwrap()
}

fn def(spec: &Value, name: &str) -> Validator {
    assert!(spec["definitions"].get(name).is_some(), "{name} is not defined in the spec");
    validator(spec, json!({ "$ref": format!("#/definitions/{name}") }))
}

fn array_of(spec: &Value, name: &str) -> Validator {
    validator(spec, json!({ "type": "array", "items": { "$ref": format!("#/definitions/{name}") } }))
}

#[track_caller]
fn assert_valid(v: &Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = v.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{what} does not match the spec: {errors:#?}\n{instance:#}");
}

#[test]
fn the_validators_reject_wrong_shapes() {
    let se = load("serviceEndpoint/7.2/serviceEndpoint.json");
    let v = def(&se, "ServiceEndpoint");
    assert!(v.is_valid(&json!({ "id": "5e47a0d8-c745-44f8-8f93-784f18ff31c4", "authorization": { "parameters": { "password": null } } })));
    assert!(v.is_valid(
        &json!({ "createdBy": { "displayName": "x", "_links": { "avatar": { "href": "h" } }, "descriptor": "aad.x" } })
    ));
    assert!(!v.is_valid(&json!({ "id": "not-a-guid" })));
    assert!(!v.is_valid(&json!({ "secretValue": "x" })), "undeclared fields fail");
    assert!(!v.is_valid(&json!({ "authorization": { "parameters": { "password": 1 } } })));
    assert!(!v.is_valid(&json!({ "createdBy": { "nickname": "x" } })));
    let dt = load("distributedTask/7.2/taskAgent.json");
    let g = def(&dt, "VariableGroup");
    assert!(g.is_valid(&json!({ "id": 1, "variables": { "a": { "value": null, "isSecret": true } } })));
    assert!(!g.is_valid(&json!({ "id": "1" })));
    assert!(!g.is_valid(&json!({ "variables": { "a": { "value": 3 } } })));
    assert!(!g.is_valid(&json!({ "modifiedOn": "yesterday" })));
    let h = def(&se, "ServiceEndpointExecutionRecord");
    assert!(!h.is_valid(&json!({ "data": { "result": "exploded" } })));
}

#[tokio::test]
async fn consumer_responses_match_the_specs() {
    let w = world().await;
    let env = &w.env;
    let t = env.app_token(APP_ID).await;
    let se = load("serviceEndpoint/7.2/serviceEndpoint.json");
    let dt = load("distributedTask/7.2/taskAgent.json");
    let endpoint = def(&se, "ServiceEndpoint");
    let endpoints = array_of(&se, "ServiceEndpoint");
    let group = def(&dt, "VariableGroup");
    let groups = array_of(&dt, "VariableGroup");
    let history = array_of(&se, "ServiceEndpointExecutionRecord");
    let ok = |(s, v, _): (u16, Value, reqwest::header::HeaderMap), what: &str| {
        assert_eq!(s, 200, "{what}: {v}");
        v
    };

    let list = ok(
        env.api(
            Method::GET,
            "/fabrikam/web/_apis/serviceendpoint/endpoints?api-version=7.2-preview.4",
            Auth::Bearer(&t),
            None,
        )
        .await,
        "list",
    );
    assert_valid(&endpoints, &list["value"], "endpoint list");
    let one_url = format!("/fabrikam/web/_apis/serviceendpoint/endpoints/{EP_FEED}?api-version=7.2-preview.4");
    let mut one = ok(env.api(Method::GET, &one_url, Auth::Bearer(&t), None).await, "get");
    assert_valid(&endpoint, &one, "endpoint");
    one["authorization"]["parameters"]["apitoken"] = json!(w.new_pat);
    assert_valid(&endpoint, &one, "the update body");
    let put = format!("/fabrikam/_apis/serviceendpoint/endpoints/{EP_FEED}?api-version=7.2-preview.4");
    let updated = ok(env.api(Method::PUT, &put, Auth::Bearer(&t), Some(&one)).await, "update");
    assert_valid(&endpoint, &updated, "updated endpoint");
    let many = ok(
        env.api(
            Method::PUT,
            "/fabrikam/_apis/serviceendpoint/endpoints?api-version=7.2-preview.4",
            Auth::Bearer(&t),
            Some(&json!([one])),
        )
        .await,
        "update many",
    );
    assert_valid(&endpoints, &many["value"], "updated endpoints");

    for _ in 0..2 {
        env.ctl(Method::POST, &format!("/_control/consumers/service-endpoints/{EP_FEED}/runs"), json!({})).await;
    }
    let h = ok(
        env.api(
            Method::GET,
            &format!("/fabrikam/web/_apis/serviceendpoint/{EP_FEED}/executionhistory?api-version=7.2-preview.1"),
            Auth::Bearer(&t),
            None,
        )
        .await,
        "history",
    );
    assert_eq!(h["count"], 2);
    assert_valid(&history, &h["value"], "execution history");

    for id in [GROUP, KV_GROUP] {
        let g = ok(
            env.api(
                Method::GET,
                &format!("/fabrikam/web/_apis/distributedtask/variablegroups/{id}?api-version=7.2-preview.2"),
                Auth::Bearer(&t),
                None,
            )
            .await,
            "group",
        );
        assert_valid(&group, &g, &format!("group {id}"));
    }
    let all = ok(
        env.api(
            Method::GET,
            "/fabrikam/web/_apis/distributedtask/variablegroups?api-version=7.2-preview.2",
            Auth::Bearer(&t),
            None,
        )
        .await,
        "groups",
    );
    assert_eq!(all["count"], 2);
    assert_valid(&groups, &all["value"], "group list");
    let params = def(&dt, "VariableGroupParameters");
    let body = json!({
        "name": "release-secrets", "type": "Vsts", "description": "",
        "variables": { "AZDO_PAT": { "value": w.new_pat, "isSecret": true }, "OTHER_SECRET": { "value": null, "isSecret": true } },
        "variableGroupProjectReferences": all["value"][1]["variableGroupProjectReferences"],
    });
    assert_valid(&params, &body, "the update body");
    let updated = ok(
        env.api(
            Method::PUT,
            &format!("/fabrikam/_apis/distributedtask/variablegroups/{GROUP}?api-version=7.2-preview.2"),
            Auth::Bearer(&t),
            Some(&body),
        )
        .await,
        "group update",
    );
    assert_valid(&group, &updated, "updated group");
}

/// The projects, endpoints and groups the examples name.
fn example_seed() -> patrol_emulator::seed::Seed {
    let mut s = seed();
    let ep = |id: &str, name: &str, kind: &str, scheme: &str, projects: &[&str]| {
        json!({ "organization": "fabrikam", "projects": projects, "id": id, "name": name, "type": kind, "url": "https://example.test/",
                "scheme": scheme, "parameters": { "username": "u", "password": "p" }, "administrators": [ADMIN] })
    };
    let vg = |id: i32, name: &str, project: &str| {
        json!({ "organization": "fabrikam", "projects": [project], "id": id, "name": name,
                "variables": { "key1": { "value": "value1" }, "key2": { "value": "s", "isSecret": true } }, "administrators": [ADMIN] })
    };
    let extra: patrol_emulator::seed::Seed = serde_json::from_value(json!({
        "consumers": {
            "projects": [
                { "organization": "fabrikam", "name": "DefaultAgileGitProject" },
                { "organization": "fabrikam", "name": "TestProject", "id": "c7e5f0b3-71fa-4429-9fb3-3321963a7c06" },
                { "organization": "fabrikam", "name": "VGDemo" },
                { "organization": "fabrikam", "name": "DGDemo" }
            ],
            "serviceEndpoints": [
                ep("4b16dc87-22a0-45f9-82d8-2e295c4597c6", "TestEndpoint", "Azure", "Certificate", &["DefaultAgileGitProject"]),
                ep("106a0c71-70fe-4d96-ba5c-5b6548708d15", "Updated TestEndpoint", "Azure", "UsernamePassword", &["DefaultAgileGitProject"]),
                ep("06608515-e864-45ca-89cb-0a2a3cb6ebd0", "TestEndpoint3", "Azure", "UsernamePassword", &["DefaultAgileGitProject"]),
                ep("ffc7206f-1dc1-4008-8a80-ceb77cc98d70", "TestEndpoint2", "Generic", "UsernamePassword", &["DefaultAgileGitProject"]),
                ep("5e47a0d8-c745-44f8-8f93-784f18ff31c4", "MyNewServiceEndpoint", "Generic", "UsernamePassword", &["TestProject", "DefaultAgileGitProject"]),
                ep("18807d4f-3345-4888-b2dc-f2884e4eb235", "HistoryEndpoint", "Generic", "UsernamePassword", &["DefaultAgileGitProject"])
            ],
            "variableGroups": [vg(1, "TestVariableGroup1", "VGDemo"), vg(2, "TestVariableGroup2", "DGDemo"), vg(3, "TestVariableGroup3", "DGDemo")]
        }
    }))
    .unwrap();
    s.consumers = extra.consumers;
    if let Some(c) = s.consumers.as_mut() {
        // Group 1 is in both demo projects (the examples read it from VGDemo and update it in DGDemo).
        c.variable_groups[0].projects.push("DGDemo".into());
    }
    s
}

/// The examples' requests that the emulator does not serve: creating, deleting and sharing endpoints and
/// groups (patrol only reads and updates consumers) and the endpoint proxy.
const NOT_EMULATED: &[&str] = &[
    "CreateAzureRMEndpoint",
    "CreateGenericEndpoint",
    "POST__CreateServiceEndpoint",
    "DELETE__ServiceEndpoint",
    "DeleteServiceEndpoint",
    "ShareServiceEndpoint",
    "endpointproxy/",
    "DELETE_VariableGroup",
    "POST_CreateVariableGroup",
];

#[tokio::test]
async fn the_specs_http_examples_for_consumers_are_replayed() {
    let env = start_with(patrol_emulator::EmulatorConfig { seed: Some(example_seed()), ..Default::default() }).await;
    env.ctl(Method::POST, "/_control/consumers/service-endpoints/18807d4f-3345-4888-b2dc-f2884e4eb235/runs", json!({}))
        .await;
    let token = env.user_token(ADMIN, &["vso.serviceendpoint_manage", "vso.variablegroups_manage"]).await;
    let se = load("serviceEndpoint/7.2/serviceEndpoint.json");
    let dt = load("distributedTask/7.2/taskAgent.json");
    let mut count = 0;
    for (dir, spec) in [("serviceEndpoint/7.2/httpExamples", &se), ("distributedTask/7.2/httpExamples", &dt)] {
        let mut files = walk(&specs().join(dir));
        files.sort();
        for f in files {
            let rel = f.strip_prefix(specs()).unwrap().to_string_lossy().to_string();
            if NOT_EMULATED.iter().any(|n| rel.contains(n)) {
                continue;
            }
            let ex = load(&rel);
            let method: Method =
                ex.get("x-ms-vss-request-method").and_then(Value::as_str).unwrap_or("GET").parse().unwrap();
            let mut url = url::Url::parse(ex["x-ms-vss-request-url"].as_str().unwrap()).unwrap();
            let mut query: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "api-version")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let path = url.path().to_string();
            let (op_path, schema) = operation(spec, &path, &method, &query);
            let version = op_path.version;
            query.push(("api-version".into(), version.to_string()));
            url.set_query(None);
            let target = format!(
                "{}{}?{}",
                env.emu.endpoints().devops,
                path,
                url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&query).finish()
            );
            let body = ex["parameters"].get("body").cloned().filter(|b| !b.is_null());
            let mut rb = env
                .http
                .request(method.clone(), &target)
                .bearer_auth(&token)
                .header("X-TFS-FedAuthRedirect", "Suppress");
            if let Some(b) = &body {
                rb = rb.json(b);
            }
            let r = rb.send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            let resp: Value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
            let expected: u16 = ex["responses"].as_object().unwrap().keys().next().unwrap().parse().unwrap();
            assert_eq!(status, expected, "{rel}: {method} {target} → {resp}");
            let schema = schema.unwrap_or_else(|| panic!("{rel}: no operation in the spec for {method} {path}"));
            let (root, instance) = if schema["type"] == "array" {
                (json!({ "type": "array", "items": schema["items"] }), resp["value"].clone())
            } else {
                (schema, resp.clone())
            };
            assert!(!instance.is_null(), "{rel}: the example's object must exist: {resp}");
            if instance.is_array() {
                assert!(!instance.as_array().unwrap().is_empty(), "{rel}: the example's objects must exist");
            }
            assert_valid(&validator(spec, root), &instance, &rel);
            count += 1;
        }
    }
    assert_eq!(count, 11 + 5, "every endpoint, execution history and variable group read/update example was replayed");
}

struct Op {
    version: &'static str,
}

/// The spec operation a request hits (path template with `{…}` segments, method, required query parameters;
/// a project-level path also matches the organization-level template of older examples) and its 200 schema.
fn operation(spec: &Value, path: &str, method: &Method, query: &[(String, String)]) -> (Op, Option<Value>) {
    let segs: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(|s| s.to_lowercase()).collect();
    let without_project: Vec<String> =
        segs.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, s)| s.clone()).collect();
    let mut best: Option<(usize, Value, String)> = None;
    for candidate in [&segs, &without_project] {
        for key in ["paths", "x-ms-paths"] {
            let Some(paths) = spec.get(key).and_then(Value::as_object) else { continue };
            for (p, ops) in paths {
                let pattern: Vec<String> = p
                    .split('?')
                    .next()
                    .unwrap_or(p)
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.to_lowercase())
                    .collect();
                let same = pattern.len() == candidate.len()
                    && pattern.iter().zip(candidate.iter()).all(|(a, b)| a.starts_with('{') || a == b);
                let op = &ops[method.as_str().to_lowercase()];
                if !same || op.is_null() {
                    continue;
                }
                let required: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|x| x["in"] == "query" && x["required"] == true)
                    .filter_map(|x| x["name"].as_str())
                    .collect();
                if !required.iter().all(|r| query.iter().any(|(k, _)| k == r)) {
                    continue;
                }
                let version = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find_map(|x| x["$ref"].as_str().and_then(|r| r.rsplit('/').next()))
                    .unwrap_or("api-Version-preview.1")
                    .to_string();
                if best.as_ref().is_none_or(|(n, _, _)| required.len() > *n) {
                    best = Some((required.len(), op["responses"]["200"]["schema"].clone(), version));
                }
            }
        }
        if best.is_some() {
            break;
        }
    }
    match best {
        Some((_, schema, v)) => {
            let version = match v.as_str() {
                "api-Version-preview.4" => "7.2-preview.4",
                "api-Version-preview.2" => "7.2-preview.2",
                _ => "7.2-preview.1",
            };
            (Op { version }, Some(schema).filter(|s| !s.is_null()))
        }
        None => (Op { version: "7.2-preview.1" }, None),
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    out
}
