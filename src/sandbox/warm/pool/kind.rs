//! The two kinds of ready sandbox and which one a script gets: a script that names one of the
//! preloaded modules gets a sandbox that already imported them; any other script a plain one
//! (an interpreter started in its jail, nothing imported). A hello world then never takes a
//! sandbox whose pandas import (a quarter of a CPU-second) it does not need, and a plain sandbox
//! holds a fraction of a preloaded one's memory.

/// Which ready sandbox a script runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Nothing imported.
    Plain,
    /// `--preload-modules` imported.
    Preloaded,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Plain, Kind::Preloaded];

    /// For logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Preloaded => "preloaded",
        }
    }

    /// The other kind.
    pub(super) fn other(self) -> Kind {
        match self {
            Kind::Plain => Kind::Preloaded,
            Kind::Preloaded => Kind::Plain,
        }
    }

    /// Its place in per-kind arrays.
    pub(super) fn index(self) -> usize {
        match self {
            Kind::Plain => 0,
            Kind::Preloaded => 1,
        }
    }
}

/// The kind of sandbox for `script`, when `preload` are the preloaded modules: preloaded when
/// the script names the top-level package of one of them as a whole word (`import pandas`,
/// `from numpy.linalg import norm`, `__import__("pandas")`), plain otherwise. A word in a
/// comment or a string counts too: a wrong guess costs time, never isolation (a plain sandbox's
/// script imports what it needs itself; a preloaded one's has nothing another script touched).
pub fn kind_for(script: &str, preload: &[String]) -> Kind {
    let mut names = preload.iter().filter_map(|module| module.split('.').next()).filter(|name| !name.is_empty());
    if names.any(|name| names_word(script, name)) {
        Kind::Preloaded
    } else {
        Kind::Plain
    }
}

/// Whether `word` occurs in `text` with no identifier character on either side.
fn names_word(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// Which kind the pool starts next, given how many of each are ready and wanted (indexed by
/// `Kind::index`): the one furthest below its target, a plain one on a tie (it is ready in a
/// fraction of the time); None when both have enough.
pub fn next_to_start(ready: [usize; 2], target: [usize; 2]) -> Option<Kind> {
    let missing = |kind: Kind| target[kind.index()].saturating_sub(ready[kind.index()]);
    let (plain, preloaded) = (missing(Kind::Plain), missing(Kind::Preloaded));
    match (plain, preloaded) {
        (0, 0) => None,
        (plain, preloaded) if preloaded > plain => Some(Kind::Preloaded),
        _ => Some(Kind::Plain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preload() -> Vec<String> {
        vec!["numpy".into(), "pandas".into()]
    }

    #[test]
    fn a_script_that_imports_a_preloaded_module_gets_a_preloaded_sandbox() {
        for script in [
            "import pandas as pd\ndef main(): return {}",
            "from numpy.linalg import norm\ndef main(): return {}",
            "def main():\n    np = __import__('numpy')\n    return {}",
            "import os, pandas",
        ] {
            assert_eq!(kind_for(script, &preload()), Kind::Preloaded, "{script}");
        }
    }

    #[test]
    fn a_script_that_names_none_of_them_gets_a_plain_sandbox() {
        for script in [
            "def main():\n    return {'message': 'Hello World'}\n",
            // Only whole words count: other names that contain them do not.
            "import numpyro\nmy_pandas = 1\npandas2 = 2\ndef main(): return {}",
            "import pandasé",
        ] {
            assert_eq!(kind_for(script, &preload()), Kind::Plain, "{script}");
        }
    }

    #[test]
    fn a_dotted_preload_module_is_named_by_its_top_level_package() {
        let preload = vec!["sklearn.linear_model".to_string(), String::new()];
        assert_eq!(kind_for("import sklearn", &preload), Kind::Preloaded);
        assert_eq!(kind_for("import pandas", &preload), Kind::Plain);
    }

    #[test]
    fn without_preloaded_modules_every_script_is_plain() {
        assert_eq!(kind_for("import pandas", &[]), Kind::Plain);
    }

    #[test]
    fn the_pool_starts_the_kind_furthest_below_its_target_plain_first() {
        assert_eq!(next_to_start([0, 0], [1, 1]), Some(Kind::Plain));
        assert_eq!(next_to_start([1, 0], [1, 1]), Some(Kind::Preloaded));
        assert_eq!(next_to_start([1, 0], [2, 3]), Some(Kind::Preloaded));
        assert_eq!(next_to_start([0, 2], [3, 4]), Some(Kind::Plain));
        assert_eq!(next_to_start([1, 1], [1, 1]), None);
        assert_eq!(next_to_start([3, 0], [1, 0]), None);
    }
}
