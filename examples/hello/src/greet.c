#include <stdio.h>

#include "greet.h"

const char *greeting(const char *name)
{
	static char buf[128];
	snprintf(buf, sizeof(buf), "Hello, %.64s!", name);
	return buf;
}
