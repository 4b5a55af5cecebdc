//! The Confluent Schema Registry REST API v1 (Avro), over [`Registry`].
//!
//! Every answer, error or not, is `application/vnd.schemaregistry.v1+json`;
//! errors are `{"error_code", "message"}` with Confluent's codes.

use super::{Registry, RegistryError, VersionSpec};
use crate::compat::CompatibilityLevel;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// The media type of every answer.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Params = Query<HashMap<String, String>>;
type Answer = Result<Response, RegistryError>;

/// A JSON answer with the registry's media type.
pub fn confluent_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

fn ok(body: Value) -> Answer {
    Ok(confluent_json(StatusCode::OK, &body))
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The routes, ready to serve.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/", get(|| async { ok(json!({})) }))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(list_versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(get_version).delete(delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(get_version_schema))
        .route("/subjects/{subject}/versions/{version}/referencedby", get(referenced_by))
        .route("/schemas/types", get(|| async { ok(json!(["AVRO"])) }))
        .route("/schemas/ids/{id}", get(get_schema))
        .route("/schemas/ids/{id}/schema", get(get_schema_text))
        .route("/schemas/ids/{id}/versions", get(get_schema_versions))
        .route("/schemas/ids/{id}/subjects", get(get_schema_subjects))
        .route("/compatibility/subjects/{subject}/versions", post(check_all))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(check_version))
        .route("/config", get(get_global_config).put(put_global_config))
        .route("/config/{subject}", get(get_subject_config).put(put_subject_config).delete(delete_subject_config))
        .route("/mode", get(|| async { ok(json!({"mode": "READWRITE"})) }))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            confluent_json(StatusCode::NOT_FOUND, &json!({"error_code": 404, "message": "HTTP 404 Not Found"}))
        })
        .method_not_allowed_fallback(|| async {
            confluent_json(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error_code": 405, "message": "HTTP 405 Method Not Allowed"}),
            )
        })
        .with_state(registry)
}

/// The body of register, lookup and compatibility requests.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: Option<String>,
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

fn schema_from(body: &Bytes) -> Result<String, RegistryError> {
    let request: SchemaRequest =
        serde_json::from_slice(body).map_err(|error| RegistryError::BadRequest(error.to_string()))?;
    if let Some(kind) = request.schema_type.as_deref()
        && !kind.eq_ignore_ascii_case("AVRO")
    {
        return Err(RegistryError::InvalidSchema(format!(
            "schema type {kind} is not supported by this registry; it serves AVRO"
        )));
    }
    if !request.references.is_empty() {
        return Err(RegistryError::InvalidSchema(
            "schema references are not supported by this registry; inline the referenced types".into(),
        ));
    }
    request.schema.ok_or_else(|| RegistryError::InvalidSchema("the request has no \"schema\" field".into()))
}

fn schema_id(text: &str) -> Result<u32, RegistryError> {
    text.parse().map_err(|_| RegistryError::SchemaNotFound(text.to_owned()))
}

fn level_from(body: &Bytes) -> Result<CompatibilityLevel, RegistryError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| RegistryError::BadRequest(error.to_string()))?;
    let name =
        value.get("compatibility").or_else(|| value.get("compatibilityLevel")).and_then(Value::as_str).ok_or_else(
            || RegistryError::InvalidCompatibilityLevel("the body has no \"compatibility\" field".into()),
        )?;
    name.parse()
        .map_err(|error: crate::compat::UnknownLevel| RegistryError::InvalidCompatibilityLevel(error.to_string()))
}

/// Prometheus text: what the registry holds and how often writes raced.
async fn metrics(State(r): State<Arc<Registry>>) -> Response {
    let (schemas, subjects, versions) = r.sizes();
    let body = format!(
        "# HELP registry_schemas Distinct schemas (ids) held.\n# TYPE registry_schemas gauge\nregistry_schemas {schemas}\n\
         # HELP registry_subjects Subjects with at least one live version.\n# TYPE registry_subjects gauge\nregistry_subjects {subjects}\n\
         # HELP registry_versions Live subject versions.\n# TYPE registry_versions gauge\nregistry_versions {versions}\n\
         # HELP registry_registrations_total Registrations asked for, of new schemas or ones already registered.\n\
         # TYPE registry_registrations_total counter\nregistry_registrations_total {}\n\
         # HELP registry_write_races_lost_total Registrations retried after another instance's claim won.\n\
         # TYPE registry_write_races_lost_total counter\nregistry_write_races_lost_total {}\n\
         # HELP registry_write_gave_way_total Registrations that waited for another instance's retry after its claim lost.\n\
         # TYPE registry_write_gave_way_total counter\nregistry_write_gave_way_total {}\n",
        r.registrations(),
        r.races_lost(),
        r.gave_way()
    );
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn list_subjects(State(r): State<Arc<Registry>>, Query(p): Params) -> Answer {
    ok(json!(r.subjects(flag(&p, "deleted"))))
}

async fn list_versions(State(r): State<Arc<Registry>>, Path(subject): Path<String>, Query(p): Params) -> Answer {
    ok(json!(r.versions(&subject, flag(&p, "deleted"))?))
}

async fn register(State(r): State<Arc<Registry>>, Path(subject): Path<String>, body: Bytes) -> Answer {
    let text = schema_from(&body)?;
    ok(json!({ "id": r.register(&subject, &text).await? }))
}

async fn lookup(State(r): State<Arc<Registry>>, Path(subject): Path<String>, Query(p): Params, body: Bytes) -> Answer {
    let text = schema_from(&body)?;
    let found = r.lookup(&subject, &text, flag(&p, "deleted"))?;
    ok(json!({ "subject": found.subject, "id": found.id, "version": found.version, "schema": &*found.schema }))
}

async fn get_version(
    State(r): State<Arc<Registry>>,
    Path((subject, version)): Path<(String, String)>,
    Query(p): Params,
) -> Answer {
    let found = r.version(&subject, VersionSpec::parse(&version)?, flag(&p, "deleted"))?;
    ok(json!({ "subject": found.subject, "version": found.version, "id": found.id, "schema": &*found.schema }))
}

async fn get_version_schema(
    State(r): State<Arc<Registry>>,
    Path((subject, version)): Path<(String, String)>,
    Query(p): Params,
) -> Answer {
    let found = r.version(&subject, VersionSpec::parse(&version)?, flag(&p, "deleted"))?;
    let raw: Value = serde_json::from_str(&found.schema).map_err(|e| RegistryError::Store(e.to_string()))?;
    ok(raw)
}

async fn referenced_by(State(r): State<Arc<Registry>>, Path((subject, version)): Path<(String, String)>) -> Answer {
    r.version(&subject, VersionSpec::parse(&version)?, false)?;
    ok(json!([]))
}

async fn delete_subject(State(r): State<Arc<Registry>>, Path(subject): Path<String>, Query(p): Params) -> Answer {
    ok(json!(r.delete_subject(&subject, flag(&p, "permanent")).await?))
}

async fn delete_version(
    State(r): State<Arc<Registry>>,
    Path((subject, version)): Path<(String, String)>,
    Query(p): Params,
) -> Answer {
    ok(json!(r.delete_version(&subject, VersionSpec::parse(&version)?, flag(&p, "permanent")).await?))
}

async fn get_schema(State(r): State<Arc<Registry>>, Path(id): Path<String>) -> Answer {
    ok(json!({ "schema": &*r.schema_by_id(schema_id(&id)?)? }))
}

async fn get_schema_text(State(r): State<Arc<Registry>>, Path(id): Path<String>) -> Answer {
    let text = r.schema_by_id(schema_id(&id)?)?;
    ok(serde_json::from_str(&text).map_err(|e| RegistryError::Store(e.to_string()))?)
}

async fn get_schema_versions(State(r): State<Arc<Registry>>, Path(id): Path<String>, Query(p): Params) -> Answer {
    let versions = r.id_versions(schema_id(&id)?, flag(&p, "deleted"))?;
    ok(json!(
        versions
            .into_iter()
            .map(|(subject, version)| json!({"subject": subject, "version": version}))
            .collect::<Vec<_>>()
    ))
}

async fn get_schema_subjects(State(r): State<Arc<Registry>>, Path(id): Path<String>, Query(p): Params) -> Answer {
    let mut subjects: Vec<String> =
        r.id_versions(schema_id(&id)?, flag(&p, "deleted"))?.into_iter().map(|(s, _)| s).collect();
    subjects.dedup();
    ok(json!(subjects))
}

fn compatibility_answer(messages: Vec<String>, verbose: bool) -> Answer {
    let mut body = json!({ "is_compatible": messages.is_empty() });
    if verbose {
        body["messages"] = json!(messages);
    }
    ok(body)
}

async fn check_version(
    State(r): State<Arc<Registry>>,
    Path((subject, version)): Path<(String, String)>,
    Query(p): Params,
    body: Bytes,
) -> Answer {
    let spec = VersionSpec::parse(&version)?;
    let text = schema_from(&body)?;
    compatibility_answer(r.test_compatibility(&subject, Some(spec), &text)?, flag(&p, "verbose"))
}

async fn check_all(
    State(r): State<Arc<Registry>>,
    Path(subject): Path<String>,
    Query(p): Params,
    body: Bytes,
) -> Answer {
    let text = schema_from(&body)?;
    compatibility_answer(r.test_compatibility(&subject, None, &text)?, flag(&p, "verbose"))
}

async fn get_global_config(State(r): State<Arc<Registry>>) -> Answer {
    ok(json!({ "compatibilityLevel": r.config(None, true)? }))
}

async fn put_global_config(State(r): State<Arc<Registry>>, body: Bytes) -> Answer {
    let level = level_from(&body)?;
    r.set_config(None, level).await?;
    ok(json!({ "compatibility": level }))
}

async fn get_subject_config(State(r): State<Arc<Registry>>, Path(subject): Path<String>, Query(p): Params) -> Answer {
    ok(json!({ "compatibilityLevel": r.config(Some(&subject), flag(&p, "defaultToGlobal"))? }))
}

async fn put_subject_config(State(r): State<Arc<Registry>>, Path(subject): Path<String>, body: Bytes) -> Answer {
    let level = level_from(&body)?;
    r.set_config(Some(&subject), level).await?;
    ok(json!({ "compatibility": level }))
}

async fn delete_subject_config(State(r): State<Arc<Registry>>, Path(subject): Path<String>) -> Answer {
    ok(json!({ "compatibilityLevel": r.delete_config(&subject).await? }))
}
