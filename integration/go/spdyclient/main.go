// spdyclient is an independent SPDY/3.1 client for berth's CRI streaming
// tests: the framing and header compression are moby's spdystream (Debian's
// golang-github-docker-spdystream-dev, the library client-go and kubelet
// use), the remote-command and port-forward stream layout is Kubernetes'.
// Built offline with GOPATH=/usr/share/gocode GO111MODULE=off.
//
//	spdyclient exec URL [-stdin] [-stdout] [-stderr] [-tty] [-resize WxH] [-status FILE] [-protocol P]
//	spdyclient portforward URL -port N [-connections N] [-status FILE]
//
// exec copies its stdin to the stdin stream and the output streams to its
// own stdout/stderr, then writes the error stream's content to -status.
// portforward sends its stdin through -connections forwarded connections
// at once (default 1) and prints what comes back on each; the error
// streams go to -status.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/docker/spdystream"
)

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "spdyclient: "+format+"\n", args...)
	os.Exit(2)
}

// upgrade sends the HTTP upgrade request and returns the SPDY connection.
func upgrade(raw string, protocol string) *spdystream.Connection {
	u, err := url.Parse(raw)
	if err != nil {
		fail("bad url: %v", err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		fail("dial: %v", err)
	}
	req, _ := http.NewRequest("POST", raw, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	for _, p := range strings.Split(protocol, ",") {
		req.Header.Add("X-Stream-Protocol-Version", p)
	}
	if err := req.Write(conn); err != nil {
		fail("write request: %v", err)
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, req)
	if err != nil {
		fail("read response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := ioutil.ReadAll(resp.Body)
		fmt.Printf("HTTP %d\n%s", resp.StatusCode, body)
		os.Exit(3)
	}
	fmt.Fprintf(os.Stderr, "negotiated %s\n", resp.Header.Get("X-Stream-Protocol-Version"))
	spdy, err := spdystream.NewConnection(bufferedConn{conn, r}, false)
	if err != nil {
		fail("spdy: %v", err)
	}
	go spdy.Serve(spdystream.NoOpStreamHandler)
	return spdy
}

func open(conn *spdystream.Connection, headers http.Header) *spdystream.Stream {
	s, err := conn.CreateStream(headers, nil, false)
	if err != nil {
		fail("create stream %v: %v", headers, err)
	}
	if err := s.Wait(); err != nil {
		fail("stream %v not accepted: %v", headers, err)
	}
	return s
}

func writeStatus(path string, status []byte) {
	if path == "" {
		return
	}
	if err := ioutil.WriteFile(path, status, 0600); err != nil {
		fail("write status: %v", err)
	}
}

func execMode(args []string) {
	fs := flag.NewFlagSet("exec", flag.ExitOnError)
	stdin := fs.Bool("stdin", false, "")
	stdout := fs.Bool("stdout", false, "")
	stderr := fs.Bool("stderr", false, "")
	tty := fs.Bool("tty", false, "")
	resize := fs.String("resize", "", "WxH")
	status := fs.String("status", "", "")
	protocol := fs.String("protocol", "v4.channel.k8s.io", "")
	fs.Parse(args[1:])
	conn := upgrade(args[0], *protocol)

	errStream := open(conn, http.Header{"Streamtype": {"error"}})
	var wg sync.WaitGroup
	if *stdin {
		s := open(conn, http.Header{"Streamtype": {"stdin"}})
		go func() {
			io.Copy(s, os.Stdin)
			s.Close()
		}()
	}
	copyOut := func(kind string, to io.Writer) {
		s := open(conn, http.Header{"Streamtype": {kind}})
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(to, s)
		}()
	}
	if *stdout {
		copyOut("stdout", os.Stdout)
	}
	if *stderr {
		copyOut("stderr", os.Stderr)
	}
	if *tty && *resize != "" {
		s := open(conn, http.Header{"Streamtype": {"resize"}})
		parts := strings.SplitN(*resize, "x", 2)
		w, _ := strconv.Atoi(parts[0])
		h, _ := strconv.Atoi(parts[1])
		fmt.Fprintf(s, "{\"Width\":%d,\"Height\":%d}\n", w, h)
	}
	result, _ := ioutil.ReadAll(errStream)
	wg.Wait()
	writeStatus(*status, result)
	conn.Close()
}

func portForwardMode(args []string) {
	fs := flag.NewFlagSet("portforward", flag.ExitOnError)
	port := fs.Int("port", 0, "")
	status := fs.String("status", "", "")
	connections := fs.Int("connections", 1, "forwarded connections at once, as kubectl opens them")
	fs.Parse(args[1:])
	conn := upgrade(args[0], "portforward.k8s.io")
	request, _ := ioutil.ReadAll(os.Stdin)
	p := strconv.Itoa(*port)
	pages := make([][]byte, *connections)
	errors := make([][]byte, *connections)
	var wg sync.WaitGroup
	for i := 0; i < *connections; i++ {
		id := strconv.Itoa(i)
		errStream := open(conn, http.Header{"Streamtype": {"error"}, "Port": {p}, "Requestid": {id}})
		data := open(conn, http.Header{"Streamtype": {"data"}, "Port": {p}, "Requestid": {id}})
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			data.Write(request)
			pages[i], _ = ioutil.ReadAll(data)
			errors[i], _ = ioutil.ReadAll(errStream)
		}(i)
	}
	wg.Wait()
	for i := range pages {
		if *connections > 1 {
			fmt.Printf("=== connection %d\n", i)
		}
		os.Stdout.Write(pages[i])
	}
	var all []byte
	for _, e := range errors {
		all = append(all, e...)
	}
	writeStatus(*status, all)
	conn.Close()
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: spdyclient exec|portforward URL [flags]")
	}
	switch os.Args[1] {
	case "exec":
		execMode(os.Args[2:])
	case "portforward":
		portForwardMode(os.Args[2:])
	default:
		fail("unknown mode %q", os.Args[1])
	}
}
