/* The image's name for its report; the build compiles this once per image. */
#include "sample.h"

const char sample_name[] = SAMPLE_NAME;
