//! Ready sandboxes: jails started before any script, waiting for one job. The pool keeps them
//! and says which kind a script gets; the templates are the interpreters they are forked from.

pub mod fork;
pub mod pool;
pub mod ready;
pub mod template;
