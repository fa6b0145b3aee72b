"""The shared directory: wac subscribers and the entries connectors import,
searchable by a prefix of a name, an e-mail address or a phone number."""
