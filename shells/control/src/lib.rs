//! `meshcontrol`, the coordination server's shell: the command line, and (coming with the
//! rest of issue 9) the HTTP listener, the database and the admin API over the sans-IO
//! control machine in `mesh_core::control`.
//!
//! Today: the offline policy tools (`policy check`, `policy compile`), which need no
//! server and show what a policy file means before it is applied.

pub mod inventory;
pub mod policy_cmd;
