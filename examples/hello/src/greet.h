#ifndef GREET_H
#define GREET_H

/* "Hello, NAME!" in a static buffer; names are cut at 64 bytes. */
const char *greeting(const char *name);

#endif
