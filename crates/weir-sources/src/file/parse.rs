//! From a file's text to its documents: split at `---`, parse each as YAML, recognise the
//! object, apply defaults, deserialize into the typed struct.
//!
//! Documents are parsed one at a time (a YAML stream gives no per-document positions), so a
//! document's lines are known from the split. Error messages are produced by re-parsing the
//! failing document preceded by as many empty lines as precede it in the file, so that the
//! positions the YAML parser puts in its messages are the file's.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use serde_json::Value;
use weir_store::{Kind, KindType, KindVisitor, Location, Object, ObjectKey};

use super::bounded::{self, Budget};
use super::{defaults, SourceError};

/// One document of a file, as far as it could be read.
#[derive(Clone, Debug)]
pub(super) enum Doc {
    /// A valid object of a kind Weir reads.
    Object(ObjectDoc),
    /// An object Weir reads that failed validation; the last good version keeps serving.
    Rejected {
        kind: Kind,
        key: ObjectKey,
        location: Location,
        message: String,
    },
    /// A document that cannot even be identified as an object.
    Invalid(SourceError),
}

#[derive(Clone, Debug)]
pub(super) struct ObjectDoc {
    pub kind: Kind,
    pub key: ObjectKey,
    /// File and line where the document starts.
    pub location: Location,
    /// Defaulted, without identity (uid, creation time, generation): those are set when the
    /// store is assembled.
    pub object: Object,
    /// Hash of what `metadata.generation` tracks (the spec), for kinds that have one.
    pub generation_basis: Option<u64>,
}

/// The documents of a file, or (when any document is not YAML) the first syntax error.
pub(super) fn parse_file(path: &Path, text: &str) -> Result<Vec<Doc>, SourceError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Shared by the file's documents: many small alias bombs are one big one.
    let budget = Budget::for_len(text.len());
    let mut docs = Vec::new();
    for chunk in split_documents(text) {
        let Some(start) = chunk.start_line else {
            continue;
        };
        let value: Value = match bounded::from_str(chunk.text, &budget) {
            Ok(value) => value,
            Err(_) if budget.exceeded() => return Err(expansion_error(path, &chunk, &budget)),
            Err(err) => return Err(syntax_error(path, &chunk, &err, text.len())),
        };
        if value.is_null() {
            continue;
        }
        let location = Location {
            file: path.to_owned(),
            line: start,
        };
        if let Some(doc) = parse_document(value, location, &chunk) {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Whether a file has no document with content: empty, blank, or only comments and markers.
pub(super) fn is_blank(text: &str) -> bool {
    split_documents(text)
        .iter()
        .all(|chunk| chunk.start_line.is_none())
}

/// The text of one document and where it sits in its file.
#[derive(Debug)]
pub(super) struct Chunk<'a> {
    pub text: &'a str,
    /// 1-based line of `text`'s first line in the file.
    pub first_line: usize,
    /// The first line with content (not blank, comment or a bare `---`): where the document
    /// starts for messages. `None` for a document that is all comments.
    pub start_line: Option<usize>,
}

impl Chunk<'_> {
    /// The chunk preceded by the empty lines before it, so that YAML errors carry file lines.
    fn in_place(&self) -> String {
        let mut padded = "\n".repeat(self.first_line.saturating_sub(1));
        padded.push_str(self.text);
        padded
    }
}

/// Split a YAML stream at its document markers (`---` at the start of a line, which YAML
/// forbids inside any scalar).
pub(super) fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let (mut begin, mut first_line, mut start_line) = (0, 1, None);
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let number = index + 1;
        let bare = line.trim_end_matches(['\n', '\r']);
        if let Some(rest) = marker_rest(bare) {
            if offset > begin {
                chunks.push(Chunk {
                    text: &text[begin..offset],
                    first_line,
                    start_line,
                });
            }
            (begin, first_line) = (offset, number);
            let rest = rest.trim();
            start_line = (!rest.is_empty() && !rest.starts_with('#')).then_some(number);
        } else if start_line.is_none() && is_content(bare) {
            start_line = Some(number);
        }
        offset += line.len();
    }
    if offset > begin {
        chunks.push(Chunk {
            text: &text[begin..],
            first_line,
            start_line,
        });
    }
    chunks
}

/// For a document start marker line, what follows the marker.
fn marker_rest(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("---")?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some(rest)
}

fn is_content(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty() && !line.starts_with('#') && !line.starts_with('%') && line != "..."
}

fn expansion_error(path: &Path, chunk: &Chunk<'_>, budget: &Budget) -> SourceError {
    SourceError {
        location: Location {
            file: path.to_owned(),
            line: chunk.start_line.unwrap_or(chunk.first_line),
        },
        message: format!(
            "refused: YAML aliases expand the file to more than {} nodes and bytes ({} times \
             its size, at least {}; from the document starting here); expand them, or split \
             the file (until then every object last read from it keeps serving)",
            budget.limit(),
            bounded::EXPANSION_FACTOR,
            bounded::EXPANSION_FLOOR,
        ),
        object: None,
    }
}

fn syntax_error(
    path: &Path,
    chunk: &Chunk<'_>,
    err: &serde_norway::Error,
    file_len: usize,
) -> SourceError {
    // (Bounded too: the document may hold aliases before its syntax error.)
    let located = bounded::from_str(&chunk.in_place(), &Budget::for_len(file_len)).err();
    let (line, message) = match located {
        Some(located) => (located.location().map(|l| l.line()), located.to_string()),
        None => (
            err.location().map(|l| l.line() + chunk.first_line - 1),
            err.to_string(),
        ),
    };
    SourceError {
        location: Location {
            file: path.to_owned(),
            line: line.or(chunk.start_line).unwrap_or(chunk.first_line),
        },
        message: format!(
            "not valid YAML: {message}; fix the file (until then every object last read from it \
             keeps serving)"
        ),
        object: None,
    }
}

/// Recognise, default and type one document. `None` for kinds Weir does not read.
fn parse_document(value: Value, location: Location, chunk: &Chunk<'_>) -> Option<Doc> {
    let invalid = |message: String| {
        Some(Doc::Invalid(SourceError {
            location: location.clone(),
            message,
            object: None,
        }))
    };
    let Value::Object(mut map) = value else {
        return invalid(format!(
            "expected a Kubernetes object (a mapping with apiVersion, kind and metadata), found {}; \
             remove or fix this document",
            json_type(&value)
        ));
    };
    let (Some(api_version), Some(kind_name)) = (
        map.get("apiVersion").and_then(Value::as_str),
        map.get("kind").and_then(Value::as_str),
    ) else {
        return invalid(
            "document has no apiVersion or kind; every document must be a Kubernetes object"
                .to_string(),
        );
    };
    let Some(kind) = Kind::from_type(api_version, kind_name) else {
        tracing::debug!(
            file = %location.file.display(),
            line = location.line,
            api_version,
            kind = kind_name,
            "ignoring an object of a kind weir does not read"
        );
        return None;
    };
    let Some(name) = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
    else {
        return invalid(format!("{kind} has no metadata.name; give it a name"));
    };
    let namespace = if kind.is_cluster_scoped() {
        String::new()
    } else {
        map.get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
            .unwrap_or(defaults::NAMESPACE)
            .to_owned()
    };
    let key = ObjectKey::new(namespace, name);
    defaults::apply(kind, &mut map);
    match Object::from_value(kind, Value::Object(map)) {
        Ok(object) => Some(Doc::Object(ObjectDoc {
            kind,
            key,
            location,
            generation_basis: generation_basis(&object),
            object,
        })),
        Err(err) => {
            // serde_json knows no positions; the same document read by the YAML parser
            // usually fails the same way and says where.
            let (line, detail) = match typed_yaml_error(kind, &chunk.in_place()) {
                Some(located) => (
                    located.location().map_or(location.line, |l| l.line()),
                    located.to_string(),
                ),
                None => (location.line, err.to_string()),
            };
            Some(Doc::Rejected {
                message: format!("{kind} {key} is invalid: {detail}"),
                kind,
                key,
                location: Location {
                    file: location.file,
                    line,
                },
            })
        }
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The error (with position) of reading `text` as `kind` straight from YAML.
fn typed_yaml_error(kind: Kind, text: &str) -> Option<serde_norway::Error> {
    struct Check<'a>(&'a str);
    impl KindVisitor for Check<'_> {
        type Output = Option<serde_norway::Error>;
        fn visit<T: KindType>(self) -> Self::Output {
            serde_norway::from_str::<T>(self.0).err()
        }
    }
    kind.visit(Check(text))
}

/// What `metadata.generation` tracks, hashed: the spec of Gateway API objects, the endpoints,
/// ports and address type of an EndpointSlice (as the API server does). Kinds without a
/// generation (Service, Secret, ConfigMap, Namespace) have none.
fn generation_basis(object: &Object) -> Option<u64> {
    let basis = match object {
        Object::GatewayClass(o) => serde_json::to_vec(&o.spec),
        Object::Gateway(o) => serde_json::to_vec(&o.spec),
        Object::HttpRoute(o) => serde_json::to_vec(&o.spec),
        Object::GrpcRoute(o) => serde_json::to_vec(&o.spec),
        Object::TlsRoute(o) => serde_json::to_vec(&o.spec),
        Object::TcpRoute(o) => serde_json::to_vec(&o.spec),
        Object::UdpRoute(o) => serde_json::to_vec(&o.spec),
        Object::BackendTlsPolicy(o) => serde_json::to_vec(&o.spec),
        Object::ListenerSet(o) => serde_json::to_vec(&o.spec),
        Object::ReferenceGrant(o) => serde_json::to_vec(&o.spec),
        Object::ClientTrafficPolicy(o) => serde_json::to_vec(&o.spec),
        Object::BackendTrafficPolicy(o) => serde_json::to_vec(&o.spec),
        Object::XBackendTrafficPolicy(o) => serde_json::to_vec(&o.spec),
        Object::SecurityPolicy(o) => serde_json::to_vec(&o.spec),
        Object::ExtensionPolicy(o) => serde_json::to_vec(&o.spec),
        Object::InferencePool(o) => serde_json::to_vec(&o.spec),
        Object::EndpointSlice(o) => serde_json::to_vec(&(&o.address_type, &o.endpoints, &o.ports)),
        // A Pod's generation tracks its spec; Weir reads only labels and status.
        Object::Pod(o) => serde_json::to_vec(&o.spec),
        Object::Service(_) | Object::Secret(_) | Object::ConfigMap(_) | Object::Namespace(_) => {
            return None
        }
    };
    // Serializing a typed value cannot fail; an empty basis would only mean no bumps.
    let mut hasher = DefaultHasher::new();
    basis.unwrap_or_default().hash(&mut hasher);
    Some(hasher.finish())
}
