// gorilla peer for herald's side-by-side benchmark, written as the idiomatic
// hub of gorilla/websocket's chat example: one hub goroutine owns the group
// membership, every connection has a reader goroutine and a writer goroutine
// fed by a buffered send channel. Same two endpoints as herald:
//
//	GET /ws?groups=a,b     subscriber
//	GET /publish?group=G   WebSocket publisher; each message goes to G's
//	                       subscribers with the same opcode, never back.
//
// usage: gorilla-peer [-addr 127.0.0.1:8080]
package main

import (
	"flag"
	"log"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

const (
	writeWait      = 10 * time.Second
	pongWait       = 60 * time.Second
	pingPeriod     = (pongWait * 9) / 10
	maxMessageSize = 1 << 20
	sendBuffer     = 256
)

type message struct {
	group  string
	opcode int
	data   []byte
}

type client struct {
	hub    *hub
	conn   *websocket.Conn
	groups []string
	send   chan message
}

type hub struct {
	clients    map[*client]bool
	groups     map[string]map[*client]bool
	broadcast  chan message
	register   chan *client
	unregister chan *client
}

func newHub() *hub {
	return &hub{
		clients:    make(map[*client]bool),
		groups:     make(map[string]map[*client]bool),
		broadcast:  make(chan message),
		register:   make(chan *client),
		unregister: make(chan *client),
	}
}

func (h *hub) remove(c *client) {
	delete(h.clients, c)
	for _, g := range c.groups {
		if set, ok := h.groups[g]; ok {
			if _, ok := set[c]; ok {
				delete(set, c)
				if len(set) == 0 {
					delete(h.groups, g)
				}
			}
		}
	}
}

func (h *hub) run() {
	for {
		select {
		case c := <-h.register:
			h.clients[c] = true
			for _, g := range c.groups {
				set := h.groups[g]
				if set == nil {
					set = make(map[*client]bool)
					h.groups[g] = set
				}
				set[c] = true
			}
		case c := <-h.unregister:
			if h.clients[c] {
				h.remove(c)
				close(c.send)
			}
		case m := <-h.broadcast:
			for c := range h.groups[m.group] {
				select {
				case c.send <- m:
				default: // slow consumer: drop it, as the chat example does
					h.remove(c)
					close(c.send)
				}
			}
		}
	}
}

// readPump: subscribers' data is read and ignored (it keeps the control
// frames flowing); publishers' messages go to the hub.
func (c *client) readPump(publishTo string) {
	defer func() {
		if publishTo == "" {
			c.hub.unregister <- c
		}
		c.conn.Close()
	}()
	c.conn.SetReadLimit(maxMessageSize)
	c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error {
		c.conn.SetReadDeadline(time.Now().Add(pongWait))
		return nil
	})
	for {
		op, data, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		c.conn.SetReadDeadline(time.Now().Add(pongWait))
		if publishTo != "" {
			c.hub.broadcast <- message{group: publishTo, opcode: op, data: data}
		}
	}
}

// writePump: one writer goroutine per connection.
func (c *client) writePump() {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case m, ok := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if !ok {
				c.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			if err := c.conn.WriteMessage(m.opcode, m.data); err != nil {
				return
			}
		case <-ticker.C:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 1024,
	CheckOrigin:     func(r *http.Request) bool { return true },
}

func serveSubscriber(h *hub, w http.ResponseWriter, r *http.Request) {
	var names []string
	seen := map[string]bool{}
	for _, g := range strings.Split(r.URL.Query().Get("groups"), ",") {
		if g != "" && !seen[g] {
			seen[g] = true
			names = append(names, g)
		}
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &client{hub: h, conn: conn, groups: names, send: make(chan message, sendBuffer)}
	h.register <- c
	go c.writePump()
	go c.readPump("")
}

func servePublisher(h *hub, w http.ResponseWriter, r *http.Request) {
	group := r.URL.Query().Get("group")
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &client{hub: h, conn: conn}
	go c.readPump(group)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	h := newHub()
	go h.run()
	http.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) { serveSubscriber(h, w, r) })
	http.HandleFunc("/publish", func(w http.ResponseWriter, r *http.Request) { servePublisher(h, w, r) })
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	log.Printf("gorilla: listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
