# cmake -DIN=file -DOUT=file.c -DFUNC=name -P EmbedBytes.cmake
# Writes OUT: a C array of IN's bytes and `const uint8_t *FUNC(size_t *len)` returning it.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" hexlen)
math(EXPR n "${hexlen} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
# Break the one long line every 16 bytes (80 characters of "0xNN,").
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n  " body "${body}")
file(WRITE "${OUT}" "/* Generated at build time from ${IN}; do not edit. */
#include <stddef.h>
#include <stdint.h>

static const uint8_t bytes[${n} + 1] = {
  ${body}
};

const uint8_t *${FUNC}(size_t *len);

const uint8_t *${FUNC}(size_t *len)
{
  *len = ${n};
  return bytes;
}
")
