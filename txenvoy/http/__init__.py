"""HTTP: header maps, the HTTP/1.1 codec and the HTTP connection manager's building blocks."""
