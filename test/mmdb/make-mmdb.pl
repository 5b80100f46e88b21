#!/usr/bin/perl
# make-mmdb.pl: writes a small GeoIP2-Country-shaped MaxMind DB for tests.
#
#   make-mmdb.pl OUT.mmdb NETWORK=CC [NETWORK=CC ...]
#   make-mmdb.pl OUT.mmdb 127.0.0.3/32=KP 127.0.0.4/32=DE 2001:db8::/32=FR
#
# NETWORK is IPv4 or IPv6 CIDR ("/32" or "/128" may be left off for a single address). CC is a
# two-letter country code (any case, stored uppercase) written as both country.iso_code and
# registered_country.iso_code, like a real GeoIP2-Country record. "NETWORK=registered:CC" writes
# only registered_country, to test readers that fall back to it.
#
# The file is written to OUT.mmdb.tmp and renamed into place, so a reader never sees half a
# file. Exit status 0 on success, 2 on a usage error, 1 on any other failure. See README.md.
use strict;
use warnings;

use MaxMind::DB::Writer::Tree;

sub usage {
    print STDERR "usage: $0 OUT.mmdb NETWORK=CC [NETWORK=CC ...]\n"
        . "       e.g. $0 /tmp/geo.mmdb 127.0.0.3/32=KP 127.0.0.4/32=DE\n"
        . "       NETWORK=registered:CC sets only registered_country\n";
    exit 2;
}

sub fail {
    print STDERR "$0: @_\n";
    exit 1;
}

usage() if @ARGV < 2;
my ( $out, @pairs ) = @ARGV;

# Every map key the records use must have a declared type, or write_tree dies.
my %types = (
    country            => 'map',
    registered_country => 'map',
    continent          => 'map',
    names              => 'map',
    iso_code           => 'utf8_string',
    code               => 'utf8_string',
    en                 => 'utf8_string',
    geoname_id         => 'uint32',
);

my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version    => 6,
    record_size   => 24,
    database_type => 'GeoIP2-Country',
    languages     => ['en'],
    description   => { en => 'mc-proxy test database' },

    # Loopback and private ranges are what tests use, and the writer drops them by default.
    remove_reserved_networks => 0,

    # Makes ::ffff:a.b.c.d (and 6to4/Teredo) find the IPv4 records.
    alias_ipv6_to_ipv4    => 1,
    map_key_type_callback => sub { $types{ $_[0] } },
);

for my $pair (@pairs) {
    my ( $net, $registered, $cc )
        = $pair =~ m{\A([0-9A-Fa-f.:]+(?:/[0-9]{1,3})?)=(registered:)?([A-Za-z]{2})\z}
        or do { print STDERR "$0: bad argument '$pair' (want NETWORK=CC)\n"; usage() };
    $cc = uc $cc;
    if ( $net !~ m{/} ) {
        $net .= $net =~ /:/ ? '/128' : '/32';
    }
    my $place = { iso_code => $cc, geoname_id => 1, names => { en => "Country $cc" } };
    my %record = ( registered_country => $place );
    $record{country} = $place unless $registered;
    eval { $tree->insert_network( $net, \%record ); 1 }
        or fail("cannot insert $net: $@");
}

my $tmp = "$out.tmp";
open my $fh, '>:raw', $tmp or fail("cannot write $tmp: $!");
eval { $tree->write_tree($fh); 1 } or fail("cannot write $tmp: $@");
close $fh or fail("cannot write $tmp: $!");
rename $tmp, $out or fail("cannot rename $tmp to $out: $!");
exit 0;
