package signal

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed web
var webFS embed.FS

// contentTypes fixes the types of the files whose extension the system's MIME table may get
// wrong (Debian's maps .ts to Qt Linguist): module scripts must be served as JavaScript.
var contentTypes = map[string]string{
	".js":   "text/javascript; charset=utf-8",
	".d.ts": "text/plain; charset=utf-8",
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// staticHandler serves the embedded demo pages and the client library.
func staticHandler() http.Handler {
	sub, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory exists
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		for ext, ct := range contentTypes {
			if strings.HasSuffix(r.URL.Path, ext) {
				h.Set("Content-Type", ct)
			}
		}
		if strings.HasPrefix(r.URL.Path, "/icehub.") {
			// Pages on other origins import the library as a module script, which is a CORS
			// request; the file is public and sent without credentials, so any origin may.
			h.Set("Access-Control-Allow-Origin", "*")
		}
		files.ServeHTTP(w, r)
	})
}
