/*!
TOML profiles: loading, inheritance, substitution, templates (work in progress).
*/
