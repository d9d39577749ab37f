/*!
The original clsync's INI configuration (work in progress).
*/
