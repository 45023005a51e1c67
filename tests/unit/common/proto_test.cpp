// The generated prfaas.v1 messages and service stubs compile, link and round-trip.
#include <gtest/gtest.h>

#include "prfaas/v1/router.grpc.pb.h"
#include "prfaas/v1/worker.grpc.pb.h"

namespace prfaas {
namespace {

TEST(ProtoTest, DecodeEventRoundTrips) {
  v1::DecodeEvent ev;
  auto* t = ev.mutable_ticket();
  t->set_ticket_id(77);
  t->set_endpoint("127.0.0.1:7000");
  t->set_cached_prefix_tokens(1024);
  std::string wire;
  ASSERT_TRUE(ev.SerializeToString(&wire));
  v1::DecodeEvent back;
  ASSERT_TRUE(back.ParseFromString(wire));
  ASSERT_EQ(back.event_case(), v1::DecodeEvent::kTicket);
  EXPECT_EQ(back.ticket().ticket_id(), 77u);
  EXPECT_EQ(back.ticket().cached_prefix_tokens(), 1024);
  EXPECT_FALSE(back.ParseFromString(std::string("\xff\xff\xff", 3)));
}

TEST(ProtoTest, ServicesHaveExpectedMethods) {
  EXPECT_STREQ(v1::DecodeService::service_full_name(), "prfaas.v1.DecodeService");
  EXPECT_STREQ(v1::PrefillService::service_full_name(), "prfaas.v1.PrefillService");
  EXPECT_STREQ(v1::Registry::service_full_name(), "prfaas.v1.Registry");
  EXPECT_STREQ(v1::RouterAdmin::service_full_name(), "prfaas.v1.RouterAdmin");
  const auto* desc = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
      "prfaas.v1.WorkerAdmin");
  ASSERT_NE(desc, nullptr);
  EXPECT_NE(desc->FindMethodByName("SetRole"), nullptr);
  EXPECT_NE(desc->FindMethodByName("Drain"), nullptr);
}

}  // namespace
}  // namespace prfaas
