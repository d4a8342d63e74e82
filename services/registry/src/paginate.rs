//! Feast's `apply_pagination_and_sorting` for list RPCs: optional sorting by a dot path,
//! then 1-based pages.

use feast_proto::registry::{PaginationMetadata, PaginationParams, SortingParams};

/// Sorts (when `sorting.sort_by` is set) and slices (when `page > 0 && limit > 0`).
/// `json_of` gives an object's protobuf JSON (proto field names) for resolving `sort_by`.
pub fn paginate<T>(
    mut items: Vec<T>,
    pagination: Option<&PaginationParams>,
    sorting: Option<&SortingParams>,
    json_of: impl Fn(&T) -> serde_json::Value,
) -> (Vec<T>, PaginationMetadata) {
    if items.is_empty() {
        return (items, PaginationMetadata::default());
    }
    if let Some(s) = sorting.filter(|s| !s.sort_by.trim().is_empty()) {
        let path: Vec<&str> = s.sort_by.trim().split('.').collect();
        let mut keyed: Vec<(SortKey, T)> = items
            .into_iter()
            .map(|item| (SortKey::of(&json_of(&item), &path), item))
            .collect();
        // Stable, like Python's sorted(); reverse=True keeps ties in input order too.
        if s.sort_order.eq_ignore_ascii_case("desc") {
            keyed.sort_by(|a, b| b.0.cmp(&a.0));
        } else {
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
        }
        items = keyed.into_iter().map(|(_, item)| item).collect();
    }
    let total = items.len() as i32;
    match pagination.filter(|p| p.page > 0 && p.limit > 0) {
        Some(p) => {
            let start = ((p.page - 1) as usize).saturating_mul(p.limit as usize);
            let page: Vec<T> = items
                .into_iter()
                .skip(start)
                .take(p.limit as usize)
                .collect();
            let total_pages = (total + p.limit - 1) / p.limit;
            let meta = PaginationMetadata {
                page: p.page,
                limit: p.limit,
                total_count: total,
                total_pages,
                has_next: p.page < total_pages,
                has_previous: p.page > 1,
            };
            (page, meta)
        }
        None => (
            items,
            PaginationMetadata {
                page: 0,
                limit: 0,
                total_count: total,
                total_pages: 1,
                has_next: false,
                has_previous: false,
            },
        ),
    }
}

/// Python's sort key `(lower(str), present, number)`.
#[derive(Debug)]
enum SortKey {
    Missing,
    Number(f64),
    Text(String),
}

impl SortKey {
    /// Resolves `path` the way Feast resolves attributes of its Python objects: on the
    /// object itself, then inside its `spec`, then inside its `meta`.
    fn of(json: &serde_json::Value, path: &[&str]) -> SortKey {
        fn resolve<'a>(
            root: Option<&'a serde_json::Value>,
            path: &[&str],
        ) -> Option<&'a serde_json::Value> {
            path.iter().try_fold(root?, |cur, key| cur.get(key))
        }
        let value = resolve(Some(json), path)
            .or_else(|| resolve(json.get("spec"), path))
            .or_else(|| resolve(json.get("meta"), path));
        match value {
            None | Some(serde_json::Value::Null) => SortKey::Missing,
            Some(serde_json::Value::Number(n)) => SortKey::Number(n.as_f64().unwrap_or(0.0)),
            Some(serde_json::Value::String(s)) => SortKey::Text(s.to_lowercase()),
            Some(other) => SortKey::Text(other.to_string().to_lowercase()),
        }
    }
}

impl PartialEq for SortKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for SortKey {}

impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        // (text, present, number): "" for missing and numbers, so text sorts last,
        // missing values first among empties.
        let tuple = |k: &SortKey| -> (String, u8, f64) {
            match k {
                SortKey::Missing => (String::new(), 0, 0.0),
                SortKey::Number(n) => (String::new(), 1, *n),
                SortKey::Text(t) => (t.clone(), 1, 0.0),
            }
        };
        let (a, b) = (tuple(self), tuple(other));
        a.0.cmp(&b.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.partial_cmp(&b.2).unwrap_or(Ordering::Equal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(items: &[serde_json::Value]) -> Vec<&str> {
        items
            .iter()
            .map(|v| v["spec"]["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn empty_list_has_zero_metadata() {
        let (items, meta) = paginate(Vec::<serde_json::Value>::new(), None, None, Clone::clone);
        assert!(items.is_empty());
        assert_eq!(meta, PaginationMetadata::default());
    }

    #[test]
    fn sorts_by_spec_field_and_pages() {
        let items: Vec<_> = ["b", "C", "a", "d", "e"]
            .iter()
            .map(|n| json!({"spec": {"name": n}}))
            .collect();
        let sorting = SortingParams {
            sort_by: "name".into(),
            sort_order: "asc".into(),
        };
        let page = PaginationParams { page: 2, limit: 2 };
        let (out, meta) = paginate(items.clone(), Some(&page), Some(&sorting), Clone::clone);
        assert_eq!(names(&out), ["C", "d"]);
        assert_eq!(
            (
                meta.total_count,
                meta.total_pages,
                meta.has_next,
                meta.has_previous
            ),
            (5, 3, true, true)
        );

        let desc = SortingParams {
            sort_by: "name".into(),
            sort_order: "DESC".into(),
        };
        let (out, meta) = paginate(items, None, Some(&desc), Clone::clone);
        assert_eq!(names(&out), ["e", "d", "C", "b", "a"]);
        assert_eq!((meta.page, meta.limit, meta.total_pages), (0, 0, 1));
    }

    #[test]
    fn missing_values_sort_first_and_past_the_end_is_empty() {
        let items = vec![
            json!({"spec": {"name": "x", "owner": "b"}}),
            json!({"spec": {"name": "y"}}),
        ];
        let sorting = SortingParams {
            sort_by: "owner".into(),
            sort_order: String::new(),
        };
        let (out, _) = paginate(items.clone(), None, Some(&sorting), Clone::clone);
        assert_eq!(names(&out), ["y", "x"]);
        let (out, meta) = paginate(
            items,
            Some(&PaginationParams { page: 9, limit: 5 }),
            None,
            Clone::clone,
        );
        assert!(out.is_empty());
        assert!(!meta.has_next && meta.has_previous);
    }
}
