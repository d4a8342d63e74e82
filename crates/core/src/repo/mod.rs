//! Feature-repository definitions: every `*.yaml`/`*.yml` in the repository other than
//! `feature_store.yaml` may declare a project, entities, data sources, feature views,
//! on-demand feature views, feature services and permissions. [`load_repo`] reads them all,
//! validates them as a whole (references, duplicates, types) and builds exactly the protos
//! Feast's own `to_proto()` would build for the equivalent Python definitions, so a registry
//! written by feast-rs reads back in Feast with no spurious diff.

pub mod definitions;
mod duration;
mod infer;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use feast_proto::core::{self, data_source::SourceType as ProtoSourceType};
use feast_proto::types::value_type::Enum as ValueType;

pub use duration::parse_duration;

use crate::model::{DUMMY_ENTITY_ID, DUMMY_ENTITY_NAME};
use crate::registry::diff::DesiredState;
use crate::types::parse_dtype;
use definitions::*;

/// `data_source_class_type` values Feast writes for each kind of source.
pub const FILE_SOURCE_CLASS: &str = "feast.infra.offline_stores.file_source.FileSource";
pub const PUSH_SOURCE_CLASS: &str = "feast.data_source.PushSource";
pub const REQUEST_SOURCE_CLASS: &str = "feast.data_source.RequestSource";
pub const POSTGRES_SOURCE_CLASS: &str =
    "feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source.PostgreSQLSource";

/// An error in the repository's definitions, naming the file, the object and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoError {
    pub file: PathBuf,
    /// e.g. `feature view "driver_hourly_stats"`; empty for file-level errors.
    pub object: String,
    /// e.g. `schema[2].dtype`; empty when the whole object is at fault.
    pub field: String,
    pub message: String,
}

impl fmt::Display for RepoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if !self.object.is_empty() {
            write!(f, ": {}", self.object)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for RepoError {}

/// All errors found in one pass, so a user fixes them together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoErrors(pub Vec<RepoError>);

impl fmt::Display for RepoErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} error{} in the feature repository definitions:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RepoErrors {}

/// The definitions files of a repository, in a stable order.
pub fn definition_files(repo: &Path) -> std::io::Result<Vec<PathBuf>> {
    let ignore = read_feastignore(repo);
    let mut out = Vec::new();
    walk(repo, repo, &ignore, &mut out)?;
    out.sort();
    Ok(out)
}

fn read_feastignore(repo: &Path) -> Vec<String> {
    std::fs::read_to_string(repo.join(".feastignore"))
        .map(|text| {
            text.lines()
                .map(|l| l.trim().trim_end_matches('/').to_owned())
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect()
        })
        .unwrap_or_default()
}

fn walk(repo: &Path, dir: &Path, ignore: &[String], out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.')
            || name == "__pycache__"
            || name == "node_modules"
            || name == "target"
        {
            continue;
        }
        let rel = path
            .strip_prefix(repo)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        if ignore
            .iter()
            .any(|pat| glob_match(pat, &rel) || glob_match(pat, &name))
        {
            continue;
        }
        if entry.file_type()?.is_dir() {
            walk(repo, &path, ignore, out)?;
        } else if (name.ends_with(".yaml") || name.ends_with(".yml"))
            && name != "feature_store.yaml"
            && name != "feature_store.yml"
        {
            out.push(path);
        }
    }
    Ok(())
}

/// `*` matches any run of characters except `/`; `**` any run including `/`.
fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) if rest.first() == Some(&b'*') => {
                let rest = &rest[1..];
                (0..=t.len()).any(|i| go(rest, &t[i..]))
            }
            Some((b'*', rest)) => {
                let limit = t.iter().position(|&c| c == b'/').unwrap_or(t.len());
                (0..=limit).any(|i| go(rest, &t[i..]))
            }
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
        || (!pattern.contains('*') && text.starts_with(&format!("{pattern}/")))
}

/// Reads and validates every definitions file of `repo` for `project`.
pub fn load_repo(repo: &Path, project: &str) -> Result<DesiredState, RepoErrors> {
    let files = definition_files(repo).map_err(|e| {
        RepoErrors(vec![RepoError {
            file: repo.to_path_buf(),
            object: String::new(),
            field: String::new(),
            message: format!("cannot list the repository: {e}"),
        }])
    })?;
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let rel = file.strip_prefix(repo).unwrap_or(&file).to_path_buf();
        match std::fs::read_to_string(&file) {
            Err(e) => errors.push(RepoError {
                file: rel,
                object: String::new(),
                field: String::new(),
                message: format!("cannot read: {e}"),
            }),
            Ok(text) => match parse_definitions(&text) {
                Ok(defs) => parsed.push((rel, defs)),
                Err(message) => errors.push(RepoError {
                    file: rel,
                    object: String::new(),
                    field: String::new(),
                    message,
                }),
            },
        }
    }
    if !errors.is_empty() {
        return Err(RepoErrors(errors));
    }
    build(repo, project, parsed)
}

/// Parses one definitions file; YAML and schema errors carry their line and column.
pub fn parse_definitions(text: &str) -> Result<DefinitionsFile, String> {
    if text.trim().is_empty() {
        return Ok(DefinitionsFile::default());
    }
    serde_norway::from_str::<DefinitionsFile>(text).map_err(|e| match e.location() {
        Some(loc) => format!(
            "line {}, column {}: {}",
            loc.line(),
            loc.column(),
            strip_location(&e.to_string())
        ),
        None => e.to_string(),
    })
}

fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Builds the declared state from parsed files (exposed for tests that skip the disk).
pub fn build(
    repo: &Path,
    project: &str,
    files: Vec<(PathBuf, DefinitionsFile)>,
) -> Result<DesiredState, RepoErrors> {
    Builder {
        repo,
        project,
        errors: Vec::new(),
    }
    .run(files)
}

struct Builder<'a> {
    repo: &'a Path,
    project: &'a str,
    errors: Vec<RepoError>,
}

/// Where a definition came from, for error messages.
struct Origin<T> {
    file: PathBuf,
    def: T,
}

impl<T> Origin<T> {
    fn all(file: &Path, defs: Vec<T>) -> impl Iterator<Item = Origin<T>> {
        let file = file.to_path_buf();
        defs.into_iter().map(move |def| Origin {
            file: file.clone(),
            def,
        })
    }
}

impl Builder<'_> {
    fn err(
        &mut self,
        file: &Path,
        object: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(RepoError {
            file: file.to_path_buf(),
            object: object.into(),
            field: field.into(),
            message: message.into(),
        });
    }

    fn run(mut self, files: Vec<(PathBuf, DefinitionsFile)>) -> Result<DesiredState, RepoErrors> {
        let mut project_defs = Vec::new();
        let mut entities = Vec::new();
        let mut sources = Vec::new();
        let mut views = Vec::new();
        let mut odfvs = Vec::new();
        let mut services = Vec::new();
        let mut permissions = Vec::new();
        for (file, defs) in files {
            if let Some(p) = defs.project {
                project_defs.push(Origin {
                    file: file.clone(),
                    def: p,
                });
            }
            entities.extend(Origin::all(&file, defs.entities));
            sources.extend(Origin::all(&file, defs.data_sources));
            views.extend(Origin::all(&file, defs.feature_views));
            odfvs.extend(Origin::all(&file, defs.on_demand_feature_views));
            services.extend(Origin::all(&file, defs.feature_services));
            permissions.extend(Origin::all(&file, defs.permissions));
        }

        self.check_unique(
            "entity",
            entities
                .iter()
                .map(|o| (o.file.as_path(), o.def.name.as_str())),
        );
        self.check_unique(
            "data source",
            sources
                .iter()
                .map(|o| (o.file.as_path(), o.def.name.as_str())),
        );
        self.check_unique(
            "feature view",
            views
                .iter()
                .map(|o| (o.file.as_path(), o.def.name.as_str()))
                .chain(
                    odfvs
                        .iter()
                        .map(|o| (o.file.as_path(), o.def.name.as_str())),
                ),
        );
        self.check_unique(
            "feature service",
            services
                .iter()
                .map(|o| (o.file.as_path(), o.def.name.as_str())),
        );
        self.check_unique(
            "permission",
            permissions
                .iter()
                .map(|o| (o.file.as_path(), o.def.name.as_str())),
        );

        let project = self.project_proto(&project_defs);
        let data_sources = self.data_sources(&sources);
        let source_by_name: HashMap<&str, &core::DataSource> =
            data_sources.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut entity_protos = self.entities(&entities);
        let feature_views = self.feature_views(&views, &source_by_name, &mut entity_protos);
        let on_demand_feature_views = self.on_demand_views(&odfvs, &feature_views, &source_by_name);
        let feature_services =
            self.feature_services(&services, &feature_views, &on_demand_feature_views);
        let permission_protos = self.permissions(&permissions);

        for (o, e) in entities.iter().zip(&entity_protos) {
            let spec = e.spec.as_ref().expect("entity spec");
            if spec.value_type == ValueType::Invalid as i32 {
                let name = o.def.name.clone();
                self.err(
                    &o.file,
                    format!("entity \"{name}\""),
                    "value_type",
                    "no value_type given and no feature view with a readable source uses this entity to infer it from; \
                     set value_type (e.g. INT64 or STRING)",
                );
            }
        }
        if !self.errors.is_empty() {
            return Err(RepoErrors(self.errors));
        }
        // Feast registers its placeholder entity for entity-less views on every apply.
        entity_protos.push(core::Entity {
            spec: Some(core::EntitySpecV2 {
                name: DUMMY_ENTITY_NAME.into(),
                join_key: DUMMY_ENTITY_ID.into(),
                ..Default::default()
            }),
            meta: None,
        });
        Ok(DesiredState {
            project,
            data_sources,
            entities: entity_protos,
            feature_views,
            on_demand_feature_views,
            feature_services,
            permissions: permission_protos,
            ..Default::default()
        })
    }

    fn check_unique<'f>(&mut self, what: &str, items: impl Iterator<Item = (&'f Path, &'f str)>) {
        let mut seen: BTreeMap<String, &Path> = BTreeMap::new();
        for (file, name) in items {
            if name.is_empty() {
                self.err(file, format!("a {what}"), "name", "must not be empty");
                continue;
            }
            // Feast requires feature view names to be unique case-insensitively.
            let key = name.to_lowercase();
            if let Some(first) = seen.get(&key) {
                let msg = format!(
                    "duplicate {what} name (also declared in {})",
                    first.display()
                );
                self.err(file, format!("{what} \"{name}\""), "name", msg);
            } else {
                seen.insert(key, file);
            }
        }
    }

    fn project_proto(&mut self, defs: &[Origin<ProjectDef>]) -> core::Project {
        let mut spec = core::ProjectSpec {
            name: self.project.to_owned(),
            ..Default::default()
        };
        for (i, o) in defs.iter().enumerate() {
            if o.def.name != self.project {
                let msg = format!(
                    "the repository's project is \"{}\" (feature_store.yaml); a definitions file cannot declare another",
                    self.project
                );
                self.err(&o.file, format!("project \"{}\"", o.def.name), "name", msg);
            } else if i > 0 {
                self.err(
                    &o.file,
                    format!("project \"{}\"", o.def.name),
                    "",
                    "declared more than once",
                );
            } else {
                spec.description = o.def.description.clone();
                spec.tags = o.def.tags.clone();
                spec.owner = o.def.owner.clone();
            }
        }
        core::Project {
            spec: Some(spec),
            meta: None,
        }
    }

    fn fields(
        &mut self,
        file: &Path,
        object: &str,
        prefix: &str,
        defs: &[FieldDef],
    ) -> Vec<core::FeatureSpecV2> {
        let mut out = Vec::with_capacity(defs.len());
        let mut seen = std::collections::HashSet::new();
        for (i, f) in defs.iter().enumerate() {
            if f.name.is_empty() {
                self.err(
                    file,
                    object,
                    format!("{prefix}[{i}].name"),
                    "must not be empty",
                );
            } else if !seen.insert(f.name.as_str()) {
                self.err(
                    file,
                    object,
                    format!("{prefix}[{i}].name"),
                    format!("duplicate field \"{}\"", f.name),
                );
            }
            match parse_dtype(&f.dtype) {
                Ok(vt) => out.push(core::FeatureSpecV2 {
                    name: f.name.clone(),
                    value_type: vt as i32,
                    tags: f.tags.clone(),
                    description: f.description.clone(),
                    ..Default::default()
                }),
                Err(e) => self.err(file, object, format!("{prefix}[{i}].dtype"), e.to_string()),
            }
        }
        out
    }

    fn data_sources(&mut self, defs: &[Origin<DataSourceDef>]) -> Vec<core::DataSource> {
        use core::data_source::{CustomSourceOptions, FileOptions, Options, RequestDataOptions};
        let mut out: Vec<core::DataSource> = Vec::new();
        // Batch sources first: push sources embed them.
        let mut ordered: Vec<&Origin<DataSourceDef>> = defs
            .iter()
            .filter(|o| o.def.kind != SourceType::Push)
            .collect();
        ordered.extend(defs.iter().filter(|o| o.def.kind == SourceType::Push));
        for o in ordered {
            let d = &o.def;
            let object = format!("data source \"{}\"", d.name);
            let mut src = core::DataSource {
                name: d.name.clone(),
                description: d.description.clone(),
                tags: d.tags.clone(),
                owner: d.owner.clone(),
                field_mapping: d.field_mapping.clone(),
                timestamp_field: d.timestamp_field.clone(),
                created_timestamp_column: d.created_timestamp_column.clone(),
                date_partition_column: d.date_partition_column.clone(),
                ..Default::default()
            };
            let unexpected = |field: &str, present: bool, kind: &str| -> Option<(String, String)> {
                present.then(|| (field.to_owned(), format!("not allowed for a {kind} source")))
            };
            let mut misplaced: Vec<(String, String)> = Vec::new();
            match d.kind {
                SourceType::File => {
                    let Some(path) = d.path.clone().filter(|p| !p.is_empty()) else {
                        self.err(
                            &o.file,
                            &object,
                            "path",
                            "a file source needs `path` (a Parquet or CSV file, directory or glob)",
                        );
                        continue;
                    };
                    let file_format = match d.file_format.as_deref() {
                        None => None,
                        Some("parquet") => Some(core::FileFormat {
                            format: Some(core::file_format::Format::ParquetFormat(
                                Default::default(),
                            )),
                        }),
                        // Feast's FileFormat has no CSV; CSV files are recognised by extension.
                        Some("csv") => None,
                        Some(other) => {
                            self.err(
                                &o.file,
                                &object,
                                "file_format",
                                format!("unknown file format \"{other}\"; expected parquet or csv"),
                            );
                            None
                        }
                    };
                    if d.timestamp_field.is_empty() {
                        self.err(
                            &o.file,
                            &object,
                            "timestamp_field",
                            "a file source needs the event timestamp column",
                        );
                    }
                    src.r#type = ProtoSourceType::BatchFile as i32;
                    src.data_source_class_type = FILE_SOURCE_CLASS.into();
                    src.options = Some(Options::FileOptions(FileOptions {
                        file_format,
                        uri: path,
                        s3_endpoint_override: d.s3_endpoint_override.clone().unwrap_or_default(),
                    }));
                    misplaced.extend(unexpected("table", d.table.is_some(), "file"));
                    misplaced.extend(unexpected("query", d.query.is_some(), "file"));
                    misplaced.extend(unexpected("batch_source", d.batch_source.is_some(), "file"));
                    misplaced.extend(unexpected("schema", d.schema.is_some(), "file"));
                }
                SourceType::Postgres => {
                    if d.table.is_some() == d.query.is_some() {
                        self.err(
                            &o.file,
                            &object,
                            "table",
                            "a postgres source needs exactly one of `table` or `query`",
                        );
                    }
                    if d.timestamp_field.is_empty() {
                        self.err(
                            &o.file,
                            &object,
                            "timestamp_field",
                            "a postgres source needs the event timestamp column",
                        );
                    }
                    src.r#type = ProtoSourceType::CustomSource as i32;
                    src.data_source_class_type = POSTGRES_SOURCE_CLASS.into();
                    // Feast stores PostgreSQLSource options as this JSON (json.dumps spacing).
                    let configuration = crate::json::python_dumps(&serde_json::json!({
                        "name": d.name,
                        "query": d.query.as_deref().unwrap_or(""),
                        "table": d.table.as_deref().unwrap_or(""),
                    }));
                    src.options = Some(Options::CustomOptions(CustomSourceOptions {
                        configuration: configuration.into_bytes(),
                    }));
                    misplaced.extend(unexpected("path", d.path.is_some(), "postgres"));
                    misplaced.extend(unexpected(
                        "batch_source",
                        d.batch_source.is_some(),
                        "postgres",
                    ));
                    misplaced.extend(unexpected("schema", d.schema.is_some(), "postgres"));
                }
                SourceType::Request => {
                    let schema = match &d.schema {
                        Some(s) if !s.is_empty() => self.fields(&o.file, &object, "schema", s),
                        _ => {
                            self.err(
                                &o.file,
                                &object,
                                "schema",
                                "a request source needs a non-empty schema",
                            );
                            vec![]
                        }
                    };
                    src.r#type = ProtoSourceType::RequestSource as i32;
                    src.data_source_class_type = REQUEST_SOURCE_CLASS.into();
                    src.options = Some(Options::RequestDataOptions(RequestDataOptions {
                        schema,
                        ..Default::default()
                    }));
                    misplaced.extend(unexpected("path", d.path.is_some(), "request"));
                    misplaced.extend(unexpected(
                        "batch_source",
                        d.batch_source.is_some(),
                        "request",
                    ));
                    misplaced.extend(unexpected(
                        "timestamp_field",
                        !d.timestamp_field.is_empty(),
                        "request",
                    ));
                }
                SourceType::Push => {
                    let batch = match d.batch_source.as_deref() {
                        None => {
                            self.err(
                                &o.file,
                                &object,
                                "batch_source",
                                "a push source needs the name of its batch source",
                            );
                            None
                        }
                        Some(name) => match out.iter().find(|s| s.name == name) {
                            Some(b) if is_batch(b) => Some(b.clone()),
                            Some(_) => {
                                self.err(
                                    &o.file,
                                    &object,
                                    "batch_source",
                                    format!("\"{name}\" is not a file or postgres source"),
                                );
                                None
                            }
                            None => {
                                self.err(
                                    &o.file,
                                    &object,
                                    "batch_source",
                                    format!("no data source named \"{name}\""),
                                );
                                None
                            }
                        },
                    };
                    src.r#type = ProtoSourceType::PushSource as i32;
                    src.data_source_class_type = PUSH_SOURCE_CLASS.into();
                    if let Some(b) = &batch {
                        // Feast's PushSource.to_proto copies these from its batch source.
                        src.timestamp_field = b.timestamp_field.clone();
                        src.created_timestamp_column = b.created_timestamp_column.clone();
                        if src.field_mapping.is_empty() {
                            src.field_mapping = b.field_mapping.clone();
                        }
                        if src.date_partition_column.is_empty() {
                            src.date_partition_column = b.date_partition_column.clone();
                        }
                    }
                    // Feast embeds the batch source without its class path.
                    src.batch_source = batch.map(|b| Box::new(embedded(&b)));
                    misplaced.extend(unexpected("path", d.path.is_some(), "push"));
                    misplaced.extend(unexpected("schema", d.schema.is_some(), "push"));
                }
            }
            for (field, msg) in misplaced {
                self.err(&o.file, &object, field, msg);
            }
            out.push(src);
        }
        // Restore declaration order (push sources were built last).
        let order: HashMap<&str, usize> = defs
            .iter()
            .enumerate()
            .map(|(i, o)| (o.def.name.as_str(), i))
            .collect();
        out.sort_by_key(|s| order.get(s.name.as_str()).copied().unwrap_or(usize::MAX));
        out
    }

    fn entities(&mut self, defs: &[Origin<EntityDef>]) -> Vec<core::Entity> {
        let mut out = Vec::new();
        for o in defs {
            let d = &o.def;
            let object = format!("entity \"{}\"", d.name);
            let join_key = match d.join_keys.as_slice() {
                [] => d.name.clone(),
                [k] => k.clone(),
                _ => {
                    self.err(
                        &o.file,
                        &object,
                        "join_keys",
                        "Feast entities have exactly one join key; declare one entity per key",
                    );
                    d.join_keys[0].clone()
                }
            };
            let value_type = match d.value_type.as_deref() {
                None => ValueType::Invalid,
                Some(t) => match parse_dtype(t) {
                    Ok(vt) if is_join_key_type(vt) => vt,
                    Ok(vt) => {
                        self.err(&o.file, &object, "value_type", format!("{vt:?} cannot be a join key; use INT64, INT32, STRING, BYTES or UNIX_TIMESTAMP"));
                        vt
                    }
                    Err(e) => {
                        self.err(&o.file, &object, "value_type", e.to_string());
                        ValueType::Invalid
                    }
                },
            };
            out.push(core::Entity {
                spec: Some(core::EntitySpecV2 {
                    name: d.name.clone(),
                    value_type: value_type as i32,
                    description: d.description.clone(),
                    join_key,
                    tags: d.tags.clone(),
                    owner: d.owner.clone(),
                    ..Default::default()
                }),
                meta: None,
            });
        }
        out
    }

    fn feature_views(
        &mut self,
        defs: &[Origin<FeatureViewDef>],
        sources: &HashMap<&str, &core::DataSource>,
        entities: &mut [core::Entity],
    ) -> Vec<core::FeatureView> {
        let mut out = Vec::new();
        for o in defs {
            let d = &o.def;
            let object = format!("feature view \"{}\"", d.name);
            let ttl = match &d.ttl {
                None => prost_types::Duration::default(),
                Some(v) => match parse_duration(v) {
                    Ok(t) => t,
                    Err(e) => {
                        self.err(&o.file, &object, "ttl", e);
                        prost_types::Duration::default()
                    }
                },
            };
            let Some(source) = sources.get(d.source.as_str()).copied() else {
                self.err(
                    &o.file,
                    &object,
                    "source",
                    format!("no data source named \"{}\"", d.source),
                );
                continue;
            };
            let (batch_source, stream_source) = match ProtoSourceType::try_from(source.r#type) {
                Ok(ProtoSourceType::PushSource) => {
                    // The view's batch source is the registered one (with its class path).
                    let batch_name = source
                        .batch_source
                        .as_ref()
                        .map(|b| b.name.as_str())
                        .unwrap_or_default();
                    (
                        sources.get(batch_name).map(|b| (*b).clone()),
                        Some(source.clone()),
                    )
                }
                Ok(ProtoSourceType::RequestSource) => {
                    self.err(
                        &o.file,
                        &object,
                        "source",
                        format!(
                            "\"{}\" is a request source; feature views need a batch or push source",
                            d.source
                        ),
                    );
                    continue;
                }
                _ => (Some(source.clone()), None),
            };

            // Entities and their join keys.
            let mut join_keys: Vec<(usize, String)> = Vec::new();
            for (i, name) in d.entities.iter().enumerate() {
                match entities
                    .iter()
                    .position(|e| e.spec.as_ref().is_some_and(|s| &s.name == name))
                {
                    Some(idx) => {
                        let key = entities[idx]
                            .spec
                            .as_ref()
                            .map(|s| s.join_key.clone())
                            .unwrap_or_default();
                        if join_keys.iter().any(|(_, k)| *k == key) {
                            self.err(
                                &o.file,
                                &object,
                                format!("entities[{i}]"),
                                format!("two entities share the join key \"{key}\""),
                            );
                        }
                        join_keys.push((idx, key));
                    }
                    None => self.err(
                        &o.file,
                        &object,
                        format!("entities[{i}]"),
                        format!("no entity named \"{name}\""),
                    ),
                }
            }

            // Schema: declared, or inferred from the source's file.
            let mapped = |col: &str| -> String {
                batch_source
                    .as_ref()
                    .and_then(|b| b.field_mapping.get(col).cloned())
                    .unwrap_or_else(|| col.to_owned())
            };
            let (schema, inferred) = match &d.schema {
                Some(s) => (self.fields(&o.file, &object, "schema", s), false),
                None => match batch_source
                    .as_ref()
                    .map(|b| infer::source_columns(self.repo, b))
                {
                    Some(Ok(cols)) => {
                        let skip: Vec<&str> = batch_source
                            .iter()
                            .flat_map(|b| {
                                [
                                    b.timestamp_field.as_str(),
                                    b.created_timestamp_column.as_str(),
                                    b.date_partition_column.as_str(),
                                ]
                            })
                            .filter(|c| !c.is_empty())
                            .collect();
                        let fields = cols
                            .into_iter()
                            .filter(|(name, _)| !skip.contains(&name.as_str()))
                            .map(|(name, vt)| core::FeatureSpecV2 {
                                name: mapped(&name),
                                value_type: vt as i32,
                                ..Default::default()
                            })
                            .collect();
                        (fields, true)
                    }
                    Some(Err(e)) => {
                        self.err(
                            &o.file,
                            &object,
                            "schema",
                            format!(
                                "no schema given and it cannot be inferred from the source: {e}"
                            ),
                        );
                        continue;
                    }
                    None => {
                        self.err(
                            &o.file,
                            &object,
                            "schema",
                            "no schema given and the source has no file to infer it from",
                        );
                        continue;
                    }
                },
            };

            let mut entity_columns = Vec::new();
            let mut features = Vec::new();
            for field in schema {
                if let Some((idx, _)) = join_keys.iter().find(|(_, k)| *k == field.name) {
                    let spec = entities[*idx].spec.as_mut().expect("entity spec");
                    if spec.value_type == ValueType::Invalid as i32 {
                        spec.value_type = field.value_type;
                    } else if spec.value_type != field.value_type && !inferred {
                        let expected = ValueType::try_from(spec.value_type)
                            .map(|v| format!("{v:?}"))
                            .unwrap_or_default();
                        let got = ValueType::try_from(field.value_type)
                            .map(|v| format!("{v:?}"))
                            .unwrap_or_default();
                        self.err(
                            &o.file,
                            &object,
                            "schema",
                            format!(
                                "join key \"{}\" is {got} here but entity \"{}\" is {expected}",
                                field.name, spec.name
                            ),
                        );
                    }
                    entity_columns.push(field);
                } else {
                    features.push(field);
                }
            }
            // Join keys absent from the schema take the entity's type (Feast's inference).
            let mut ordered_entity_columns = Vec::new();
            for (idx, key) in &join_keys {
                if let Some(c) = entity_columns.iter().find(|c| &c.name == key) {
                    ordered_entity_columns.push(c.clone());
                } else {
                    let mut vt = entities[*idx]
                        .spec
                        .as_ref()
                        .map(|s| s.value_type)
                        .unwrap_or_default();
                    if vt == ValueType::Invalid as i32
                        && let Some(Ok(cols)) = batch_source
                            .as_ref()
                            .map(|b| infer::source_columns(self.repo, b))
                        && let Some((_, t)) = cols.iter().find(|(n, _)| mapped(n) == *key)
                    {
                        vt = *t as i32;
                        if let Some(spec) = entities[*idx].spec.as_mut() {
                            spec.value_type = vt;
                        }
                    }
                    ordered_entity_columns.push(core::FeatureSpecV2 {
                        name: key.clone(),
                        value_type: vt,
                        ..Default::default()
                    });
                }
            }
            let entity_names: Vec<String> = if d.entities.is_empty() {
                ordered_entity_columns.push(core::FeatureSpecV2 {
                    name: DUMMY_ENTITY_ID.into(),
                    value_type: ValueType::String as i32,
                    ..Default::default()
                });
                vec![DUMMY_ENTITY_NAME.into()]
            } else {
                d.entities.clone()
            };
            if features.is_empty() {
                self.err(
                    &o.file,
                    &object,
                    "schema",
                    "a feature view needs at least one feature besides its join keys",
                );
            }
            let version = d.version.clone().unwrap_or_else(|| "latest".into());
            if let Err(e) = crate::version::parse_version(&version) {
                self.err(&o.file, &object, "version", &e.message);
            }
            out.push(core::FeatureView {
                spec: Some(core::FeatureViewSpec {
                    name: d.name.clone(),
                    entities: entity_names,
                    features,
                    tags: d.tags.clone(),
                    ttl: Some(ttl),
                    batch_source,
                    online: d.online,
                    stream_source,
                    description: d.description.clone(),
                    owner: d.owner.clone(),
                    entity_columns: ordered_entity_columns,
                    offline: d.offline,
                    version,
                    ..Default::default()
                }),
                meta: None,
            });
        }
        out
    }

    fn projection_of_view(view: &core::FeatureView) -> core::FeatureViewProjection {
        let spec = view.spec.as_ref().expect("feature view spec");
        let batch = spec.batch_source.as_ref();
        let created = batch
            .map(|b| b.created_timestamp_column.clone())
            .unwrap_or_default();
        core::FeatureViewProjection {
            feature_view_name: spec.name.clone(),
            feature_columns: spec.features.clone(),
            // Feast's FeatureViewProjection.from_definition sets timestamp_field from the
            // source's *created* column; mirrored so Feast sees no difference.
            timestamp_field: created.clone(),
            created_timestamp_column: created,
            date_partition_column: batch
                .map(|b| b.date_partition_column.clone())
                .unwrap_or_default(),
            batch_source: batch.map(embedded),
            view_type: "featureView".into(),
            ..Default::default()
        }
    }

    fn projection_of_odfv(view: &core::OnDemandFeatureView) -> core::FeatureViewProjection {
        let spec = view.spec.as_ref().expect("on demand feature view spec");
        core::FeatureViewProjection {
            feature_view_name: spec.name.clone(),
            feature_columns: spec.features.clone(),
            // Feast writes "featureView" for every projection kind.
            view_type: "featureView".into(),
            ..Default::default()
        }
    }

    /// Applies a projection's sub-selection, alias and join-key map.
    fn project(
        &mut self,
        file: &Path,
        object: &str,
        field: &str,
        mut base: core::FeatureViewProjection,
        def: &ProjectionDef,
        join_keys: &[String],
    ) -> core::FeatureViewProjection {
        if let Some(selected) = &def.features {
            let mut cols = Vec::with_capacity(selected.len());
            for (i, name) in selected.iter().enumerate() {
                match base.feature_columns.iter().find(|c| &c.name == name) {
                    Some(c) => cols.push(c.clone()),
                    None => self.err(
                        file,
                        object,
                        format!("{field}.features[{i}]"),
                        format!(
                            "feature view \"{}\" has no feature \"{name}\"",
                            def.feature_view
                        ),
                    ),
                }
            }
            base.feature_columns = cols;
        }
        if let Some(alias) = &def.alias {
            base.feature_view_name_alias = alias.clone();
        }
        for key in def.join_key_map.keys() {
            if !join_keys.contains(key) {
                self.err(
                    file,
                    object,
                    format!("{field}.join_key_map"),
                    format!(
                        "\"{key}\" is not a join key of \"{}\" (join keys: {})",
                        def.feature_view,
                        join_keys.join(", ")
                    ),
                );
            }
        }
        base.join_key_map = def.join_key_map.clone();
        base
    }

    fn on_demand_views(
        &mut self,
        defs: &[Origin<OnDemandFeatureViewDef>],
        views: &[core::FeatureView],
        sources: &HashMap<&str, &core::DataSource>,
    ) -> Vec<core::OnDemandFeatureView> {
        use core::on_demand_source::Source;
        let mut out = Vec::new();
        for o in defs {
            let d = &o.def;
            let object = format!("on demand feature view \"{}\"", d.name);
            if d.mode != "pandas" && d.mode != "python" {
                self.err(
                    &o.file,
                    &object,
                    "mode",
                    format!("unknown mode \"{}\"; expected pandas or python", d.mode),
                );
            }
            let mut odfv_sources = BTreeMap::new();
            for (i, s) in d.sources.iter().enumerate() {
                let field = format!("sources[{i}]");
                let (name, projection_def) = match s {
                    OdfvSourceDef::Name(n) => (n.as_str(), None),
                    OdfvSourceDef::Projection(p) => (p.feature_view.as_str(), Some(p)),
                };
                let view = views
                    .iter()
                    .find(|v| v.spec.as_ref().is_some_and(|s| s.name == name));
                let source = match (view, sources.get(name)) {
                    (Some(v), _) => {
                        let base = Self::projection_of_view(v);
                        let projection = match projection_def {
                            Some(p) => {
                                self.project(&o.file, &object, &field, base, p, &view_join_keys(v))
                            }
                            None => base,
                        };
                        Source::FeatureViewProjection(projection)
                    }
                    (None, Some(src))
                        if src.r#type == ProtoSourceType::RequestSource as i32
                            && projection_def.is_none() =>
                    {
                        Source::RequestDataSource(embedded(src))
                    }
                    _ => {
                        self.err(
                            &o.file,
                            &object,
                            field,
                            format!("no feature view or request source named \"{name}\""),
                        );
                        continue;
                    }
                };
                odfv_sources.insert(
                    name.to_owned(),
                    core::OnDemandSource {
                        source: Some(source),
                    },
                );
            }
            if d.sources.is_empty() {
                self.err(
                    &o.file,
                    &object,
                    "sources",
                    "an on demand feature view needs at least one source",
                );
            }
            let features = self.fields(&o.file, &object, "schema", &d.schema);
            let udf = core::UserDefinedFunctionV2 {
                name: d.name.clone(),
                body: Vec::new(),
                body_text: d.udf.clone(),
                mode: d.mode.clone(),
            };
            let (entities, entity_columns) = if d.entities.is_empty() {
                (
                    vec![DUMMY_ENTITY_NAME.to_owned()],
                    vec![core::FeatureSpecV2 {
                        name: DUMMY_ENTITY_ID.into(),
                        value_type: ValueType::String as i32,
                        ..Default::default()
                    }],
                )
            } else {
                (d.entities.clone(), vec![])
            };
            out.push(core::OnDemandFeatureView {
                spec: Some(core::OnDemandFeatureViewSpec {
                    name: d.name.clone(),
                    features,
                    sources: odfv_sources,
                    feature_transformation: Some(core::FeatureTransformationV2 {
                        transformation: Some(
                            core::feature_transformation_v2::Transformation::UserDefinedFunction(
                                udf,
                            ),
                        ),
                    }),
                    description: d.description.clone(),
                    tags: d.tags.clone(),
                    owner: d.owner.clone(),
                    mode: d.mode.clone(),
                    write_to_online_store: d.write_to_online_store,
                    entities,
                    entity_columns,
                    singleton: d.singleton,
                    version: "latest".into(),
                    ..Default::default()
                }),
                meta: None,
            });
        }
        out
    }

    fn feature_services(
        &mut self,
        defs: &[Origin<FeatureServiceDef>],
        views: &[core::FeatureView],
        odfvs: &[core::OnDemandFeatureView],
    ) -> Vec<core::FeatureService> {
        let mut out = Vec::new();
        for o in defs {
            let d = &o.def;
            let object = format!("feature service \"{}\"", d.name);
            let mut projections = Vec::new();
            for (i, r) in d.features.iter().enumerate() {
                let field = format!("features[{i}]");
                let defs_here: Vec<ProjectionDef> = match r {
                    FeatureRefDef::View(name) => vec![ProjectionDef {
                        feature_view: name.clone(),
                        features: None,
                        alias: None,
                        join_key_map: BTreeMap::new(),
                    }],
                    FeatureRefDef::Projection(p) => vec![ProjectionDef {
                        feature_view: p.feature_view.clone(),
                        features: p.features.clone(),
                        alias: p.alias.clone(),
                        join_key_map: p.join_key_map.clone(),
                    }],
                    FeatureRefDef::Selection(map) => map
                        .iter()
                        .map(|(view, feats)| ProjectionDef {
                            feature_view: view.clone(),
                            features: Some(feats.clone()),
                            alias: None,
                            join_key_map: BTreeMap::new(),
                        })
                        .collect(),
                };
                for p in defs_here {
                    let view = views
                        .iter()
                        .find(|v| v.spec.as_ref().is_some_and(|s| s.name == p.feature_view));
                    let odfv = odfvs
                        .iter()
                        .find(|v| v.spec.as_ref().is_some_and(|s| s.name == p.feature_view));
                    let (base, join_keys) = match (view, odfv) {
                        (Some(v), _) => (Self::projection_of_view(v), view_join_keys(v)),
                        (None, Some(v)) => (Self::projection_of_odfv(v), vec![]),
                        (None, None) => {
                            self.err(
                                &o.file,
                                &object,
                                &field,
                                format!(
                                    "no feature view or on demand feature view named \"{}\"",
                                    p.feature_view
                                ),
                            );
                            continue;
                        }
                    };
                    projections.push(self.project(&o.file, &object, &field, base, &p, &join_keys));
                }
            }
            if d.features.is_empty() {
                self.err(
                    &o.file,
                    &object,
                    "features",
                    "a feature service needs at least one feature view",
                );
            }
            out.push(core::FeatureService {
                spec: Some(core::FeatureServiceSpec {
                    name: d.name.clone(),
                    features: projections,
                    tags: d.tags.clone(),
                    description: d.description.clone(),
                    owner: d.owner.clone(),
                    ..Default::default()
                }),
                meta: None,
            });
        }
        out
    }

    fn permissions(&mut self, defs: &[Origin<PermissionDef>]) -> Vec<core::Permission> {
        use core::permission_spec::{AuthzedAction, Type};
        use core::policy::PolicyType;
        // Feast's ALL_RESOURCE_TYPES, in its order: what an empty `types` means.
        const ALL_TYPES: [Type; 12] = [
            Type::Project,
            Type::FeatureView,
            Type::OnDemandFeatureView,
            Type::BatchFeatureView,
            Type::StreamFeatureView,
            Type::LabelView,
            Type::Entity,
            Type::FeatureService,
            Type::DataSource,
            Type::ValidationReference,
            Type::SavedDataset,
            Type::Permission,
        ];
        let mut out = Vec::new();
        for o in defs {
            let d = &o.def;
            let object = format!("permission \"{}\"", d.name);
            let mut types = Vec::new();
            for (i, t) in d.types.iter().enumerate() {
                let norm = normalize_enum_name(t);
                match Type::from_str_name(&norm) {
                    Some(t) => types.push(t as i32),
                    None => self.err(
                        &o.file,
                        &object,
                        format!("types[{i}]"),
                        format!(
                            "unknown resource type \"{t}\"; expected one of {}",
                            ALL_TYPES
                                .iter()
                                .map(|t| t.as_str_name().to_lowercase())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                }
            }
            if d.types.is_empty() {
                types = ALL_TYPES.iter().map(|t| *t as i32).collect();
            }
            for (i, p) in d.name_patterns.iter().enumerate() {
                if let Err(e) = regex::Regex::new(&format!("^(?:{p})$")) {
                    self.err(
                        &o.file,
                        &object,
                        format!("name_patterns[{i}]"),
                        format!("invalid regular expression: {e}"),
                    );
                }
            }
            let mut actions: Vec<i32> = Vec::new();
            let mut push_action = |a: AuthzedAction| {
                if !actions.contains(&(a as i32)) {
                    actions.push(a as i32);
                }
            };
            for (i, a) in d.actions.iter().enumerate() {
                match normalize_enum_name(a).as_str() {
                    "ALL" | "ALL_ACTIONS" => {
                        for a in [
                            AuthzedAction::Create,
                            AuthzedAction::Describe,
                            AuthzedAction::Update,
                            AuthzedAction::Delete,
                            AuthzedAction::ReadOnline,
                            AuthzedAction::ReadOffline,
                            AuthzedAction::WriteOnline,
                            AuthzedAction::WriteOffline,
                        ] {
                            push_action(a);
                        }
                    }
                    "READ" => [AuthzedAction::ReadOffline, AuthzedAction::ReadOnline].into_iter().for_each(&mut push_action),
                    "WRITE" => [AuthzedAction::WriteOffline, AuthzedAction::WriteOnline].into_iter().for_each(&mut push_action),
                    "CRUD" => [AuthzedAction::Create, AuthzedAction::Describe, AuthzedAction::Update, AuthzedAction::Delete]
                        .into_iter()
                        .for_each(&mut push_action),
                    other => match AuthzedAction::from_str_name(other) {
                        Some(a) => push_action(a),
                        None => self.errors.push(RepoError {
                            file: o.file.clone(),
                            object: object.clone(),
                            field: format!("actions[{i}]"),
                            message: format!(
                                "unknown action \"{a}\"; expected create, describe, update, delete, read_online, read_offline, \
                                 write_online, write_offline or the groups all, read, write, crud"
                            ),
                        }),
                    },
                }
            }
            if d.actions.is_empty() {
                self.err(
                    &o.file,
                    &object,
                    "actions",
                    "a permission needs at least one action",
                );
            }
            let pol = &d.policy;
            let policy_type = match (&pol.roles, &pol.groups, &pol.namespaces, pol.allow_all) {
                (Some(r), None, None, false) => {
                    Some(PolicyType::RoleBasedPolicy(core::RoleBasedPolicy {
                        roles: r.clone(),
                    }))
                }
                (None, Some(g), None, false) => {
                    Some(PolicyType::GroupBasedPolicy(core::GroupBasedPolicy {
                        groups: g.clone(),
                    }))
                }
                (None, None, Some(n), false) => Some(PolicyType::NamespaceBasedPolicy(
                    core::NamespaceBasedPolicy {
                        namespaces: n.clone(),
                    },
                )),
                (None, Some(g), Some(n), false) => Some(PolicyType::CombinedGroupNamespacePolicy(
                    core::CombinedGroupNamespacePolicy {
                        groups: g.clone(),
                        namespaces: n.clone(),
                    },
                )),
                // Feast serializes AllowAll as an empty Policy.
                (None, None, None, true) => None,
                _ => {
                    self.err(&o.file, &object, "policy", "give exactly one of: roles, groups, namespaces, groups + namespaces, or allow_all: true");
                    None
                }
            };
            out.push(core::Permission {
                spec: Some(core::PermissionSpec {
                    name: d.name.clone(),
                    types,
                    name_patterns: d.name_patterns.clone(),
                    required_tags: d.required_tags.clone(),
                    actions,
                    policy: Some(core::Policy {
                        policy_type,
                        ..Default::default()
                    }),
                    tags: d.tags.clone(),
                    ..Default::default()
                }),
                meta: None,
            });
        }
        out
    }
}

/// A data source as Feast embeds it inside projections and push sources: without the
/// `data_source_class_type` the registry stamps on registered sources.
fn embedded(source: &core::DataSource) -> core::DataSource {
    let mut out = source.clone();
    out.data_source_class_type.clear();
    if let Some(inner) = out.batch_source.as_mut() {
        inner.data_source_class_type.clear();
    }
    out
}

/// Join keys of a built feature view (its entity columns).
fn view_join_keys(view: &core::FeatureView) -> Vec<String> {
    view.spec
        .as_ref()
        .map(|s| s.entity_columns.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

/// Value types Feast's entity-key serialization supports.
fn is_join_key_type(vt: ValueType) -> bool {
    matches!(
        vt,
        ValueType::Int64
            | ValueType::Int32
            | ValueType::String
            | ValueType::Bytes
            | ValueType::UnixTimestamp
    )
}

fn is_batch(source: &core::DataSource) -> bool {
    !matches!(
        ProtoSourceType::try_from(source.r#type),
        Ok(ProtoSourceType::PushSource
            | ProtoSourceType::RequestSource
            | ProtoSourceType::StreamKafka
            | ProtoSourceType::StreamKinesis)
    )
}

/// `feature_view`, `FeatureView`, `feature-view` → `FEATURE_VIEW`.
fn normalize_enum_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut prev_lower = false;
    for c in s.trim().chars() {
        if c == '-' || c == ' ' || c == '_' {
            out.push('_');
            prev_lower = false;
        } else if c.is_ascii_uppercase() {
            if prev_lower {
                out.push('_');
            }
            out.push(c);
            prev_lower = false;
        } else {
            out.push(c.to_ascii_uppercase());
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        }
    }
    out
}
