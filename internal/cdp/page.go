//go:build unix

package cdp

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Page is one tab, addressed through a flattened session.
type Page struct {
	b       *Browser
	session string

	mu      sync.Mutex
	console []string
}

// NewPage opens a blank tab with Runtime and Page enabled, collecting console messages and
// uncaught exceptions (see Console) from before the first Navigate, so nothing is missed.
// Scripts added with AddInitScript run in every document it loads afterwards, before the
// document's own scripts.
func (b *Browser) NewPage(ctx context.Context) (*Page, error) {
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.Call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		return nil, err
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.Call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		return nil, err
	}
	p := &Page{b: b, session: att.SessionID}
	b.mu.Lock()
	b.events[p.session] = p.event
	b.mu.Unlock()
	for _, m := range []string{"Runtime.enable", "Page.enable"} {
		if err := b.Call(ctx, p.session, m, nil, nil); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *Page) event(method string, params json.RawMessage) {
	var line string
	switch method {
	case "Runtime.consoleAPICalled":
		var e struct {
			Type string `json:"type"`
			Args []struct {
				Value       any    `json:"value"`
				Description string `json:"description"`
			} `json:"args"`
		}
		if json.Unmarshal(params, &e) != nil {
			return
		}
		parts := []string{e.Type + ":"}
		for _, a := range e.Args {
			if a.Value != nil {
				parts = append(parts, fmt.Sprint(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		line = strings.Join(parts, " ")
	case "Runtime.exceptionThrown":
		var e struct {
			ExceptionDetails struct {
				Text      string `json:"text"`
				Exception *struct {
					Description string `json:"description"`
				} `json:"exception"`
			} `json:"exceptionDetails"`
		}
		if json.Unmarshal(params, &e) != nil {
			return
		}
		line = "exception: " + e.ExceptionDetails.Text
		if ex := e.ExceptionDetails.Exception; ex != nil {
			line += " " + ex.Description
		}
	default:
		return
	}
	// Keep the latest lines: a failure is explained by what the page said last, and a page
	// that logs for minutes must not grow without bound.
	p.mu.Lock()
	if p.console = append(p.console, line); len(p.console) > consoleLines {
		p.console = p.console[len(p.console)-consoleLines:]
	}
	p.mu.Unlock()
}

// consoleLines is how many of a page's console lines Console keeps.
const consoleLines = 500

// Console returns the page's latest console messages and uncaught exceptions, oldest first.
func (p *Page) Console() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.console...)
}

// AddInitScript makes source run at the start of every document the page loads from now on.
func (p *Page) AddInitScript(ctx context.Context, source string) error {
	return p.b.Call(ctx, p.session, "Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": source}, nil)
}

// Navigate loads url; it returns once the navigation has started, not when the page is done.
func (p *Page) Navigate(ctx context.Context, url string) error {
	var res struct {
		ErrorText string `json:"errorText"`
	}
	if err := p.b.Call(ctx, p.session, "Page.navigate", map[string]any{"url": url}, &res); err != nil {
		return err
	}
	if res.ErrorText != "" {
		return fmt.Errorf("navigating to %s: %s", url, res.ErrorText)
	}
	return nil
}

// Eval evaluates expr in the page, awaiting it if it is a promise, and decodes its JSON
// value into out (when out is not nil). A thrown exception is the error.
func (p *Page) Eval(ctx context.Context, expr string, out any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception *struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.b.Call(ctx, p.session, "Runtime.evaluate", map[string]any{
		"expression": expr, "awaitPromise": true, "returnByValue": true,
	}, &res)
	if err != nil {
		return err
	}
	if ex := res.ExceptionDetails; ex != nil {
		if ex.Exception != nil {
			return fmt.Errorf("%s", ex.Exception.Description)
		}
		return fmt.Errorf("%s", ex.Text)
	}
	if out != nil && len(res.Result.Value) > 0 {
		return json.Unmarshal(res.Result.Value, out)
	}
	return nil
}

// WaitFor polls expr (a boolean expression, or a promise of one) every 100 ms until it is
// true or ctx ends; the error then carries the last evaluation error, if any.
func (p *Page) WaitFor(ctx context.Context, expr string) error {
	var last error
	for {
		var ok bool
		err := p.Eval(ctx, "(async () => !!(await ("+expr+")))()", &ok)
		if err == nil && ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %v)", expr, ctx.Err(), last)
			}
			return fmt.Errorf("waiting for %s: %w", expr, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
