/* Files embedded at build time (CMakeLists.txt turns them into C arrays):
 * the status page (web/) and the JavaScript client (clients/js/src/index.js,
 * served as GET /herald-client.js). */
#ifndef HERALD_ASSETS_H
#define HERALD_ASSETS_H

extern const unsigned char status_page_html[];
extern const unsigned int status_page_html_len;
extern const unsigned char herald_client_js[];
extern const unsigned int herald_client_js_len;

#endif
